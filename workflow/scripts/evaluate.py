"""Errors, task accuracy and memory of original, projected and baseline models."""
from weightspace.collection import accepted_stores
from weightspace.evaluate import compression_table, evaluate_models, make_evaluator
from weightspace.io import write_table
from weightspace.runtime import script
from weightspace.store import ModelStore
from weightspace.subspace import load_subspaces

with script(snakemake) as log:  # noqa: F821
    inp, p, view = snakemake.input, snakemake.params, snakemake.wildcards.view  # noqa: F821
    stores = accepted_stores(list(inp.stores), inp.screen)
    subspaces, _ = load_subspaces(list(inp.subspace))
    evaluator = make_evaluator(p.evaluator, data_seed=p.data_seed, base_folder=p.base,
                               evaluation=p.evaluation)
    metrics = evaluate_models(stores, subspaces, inp.coefficients, view, p.ks,
                              evaluator, p.splits, seed=p.seed)
    comp = compression_table(ModelStore(stores[0]), subspaces, view, p.ks, len(stores))
    metrics = metrics.merge(comp[["method", "k", "compression"]], on=["method", "k"], how="left")
    write_table(metrics, snakemake.output.metrics)  # noqa: F821
    write_table(comp, snakemake.output.compression)  # noqa: F821
