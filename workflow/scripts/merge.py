"""Models merged into one by PEFT's merge utilities and in the shared subspace."""
from weightspace import merge
from weightspace.collection import accepted_stores
from weightspace.evaluators.registry import make_evaluator
from weightspace.io import write_table
from weightspace.runtime import job, script
from weightspace.subspace import load_subspaces

smk = job(globals())

with script(smk) as log:
    inp, out, p, view = smk.input, smk.output, smk.params, smk.wildcards.view
    subspaces, _ = load_subspaces(list(inp.subspace))
    evaluator = make_evaluator(p.evaluator, data_seed=p.data_seed, base_folder=p.base, evaluation=p.evaluation)
    scores, diag = merge.merge_models(accepted_stores(list(inp.stores), inp.screen), subspaces, view,
                                      evaluator, p.splits, p.settings)
    informative, verdict = merge.testbed_verdict(diag)
    log.info("testbed: %s", verdict)
    summary = merge.summary(scores).assign(informative_testbed=informative,
                                           subspace_mean_vs_mean=merge.mean_gap(scores))
    write_table(scores, out.scores)
    write_table(diag, out.diagnostics)
    write_table(summary, out.summary)
    log.info("merge summary:\n%s\ndiagnostics:\n%s", summary.to_string(), diag.to_string())
