"""New tasks learned by coefficients only, beside PEFT's tuners and the controls."""
import os

from weightspace import adapt
from weightspace.collection import accepted_stores
from weightspace.io import write_table
from weightspace.runtime import job, script
from weightspace.subspace import load_subspaces

smk = job(globals())

with script(smk) as log:
    inp, out, p, view = smk.input, smk.output, smk.params, smk.wildcards.view
    subspaces, _ = load_subspaces(list(inp.subspace))
    mean_model = None if p.base else adapt.mean_weights(accepted_stores(list(inp.stores), inp.screen))
    problem = adapt.make_problem(p.evaluator, p.base, mean_model, subspaces, view, p.settings, p.data_seed,
                                 *p.dataset)
    base_path = os.path.relpath(p.base, os.path.join(out.export, "task", "lora")) if p.base else ""
    os.makedirs(out.export, exist_ok=True)
    results, sweep = adapt.run_adapt(problem, subspaces, view, p.settings, set(p.taken), has_base=bool(p.base),
                                     export_dir=out.export if p.base else None, base_path=base_path,
                                     families=tuple(p.families))
    write_table(results, out.results)
    write_table(sweep, out.sweep)
    summary = adapt.summary(results)
    write_table(summary, out.summary)
    paired = adapt.paired(results)
    write_table(paired, out.paired)
    log.info("adapt summary:\n%s\npaired differences:\n%s", summary.to_string(), paired.to_string())
