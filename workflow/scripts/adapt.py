"""New tasks learned by coefficients only, beside PEFT's tuners and the controls."""
import os

from safetensors.torch import load_file

from weightspace import adapt, figures, zoo
from weightspace.collection import accepted_stores
from weightspace.io import write_table
from weightspace.runtime import script
from weightspace.subspace import load_subspaces

with script(snakemake) as log:  # noqa: F821
    inp, out, p, view = snakemake.input, snakemake.output, snakemake.params, snakemake.wildcards.view  # noqa: F821
    subspaces, _ = load_subspaces(list(inp.subspace))
    settings = dict(p.settings)
    base = load_file(os.path.join(p.base, "model.safetensors")) if p.base else None
    mean_model = None if base else adapt.mean_weights(accepted_stores(list(inp.stores), inp.screen))
    starts = adapt.start_points(subspaces, view, base, mean_model)
    settings["base_path"] = os.path.relpath(p.base, os.path.join(out.export, "task", "lora")) if p.base else ""
    results, sweep = adapt.run_adapt(subspaces, view, starts, settings, zoo.load_digits(p.data_seed),
                                     set(p.taken), export_dir=out.export if base else None)
    os.makedirs(out.export, exist_ok=True)
    write_table(results, out.results)
    write_table(sweep, out.sweep)
    summary = adapt.summary(results)
    write_table(summary, out.summary)
    figures.adapt_figure(summary, p.title, out.figure)
