"""Errors, task accuracy and memory of original, projected and baseline models."""
from weightspace.collection import accepted_stores
from weightspace.evaluate import compression_table, evaluate_models, saturation_warnings
from weightspace.evaluators.registry import make_evaluator
from weightspace.io import write_table
from weightspace.runtime import job, script
from weightspace.store import ModelStore
from weightspace.subspace import load_subspaces

smk = job(globals())

with script(smk) as log:
    inp, p, view = smk.input, smk.params, smk.wildcards.view
    stores = accepted_stores(list(inp.stores), inp.screen)
    subspaces, _ = load_subspaces(list(inp.subspace))
    evaluator = make_evaluator(p.evaluator, data_seed=p.data_seed, base_folder=p.base,
                               evaluation=p.evaluation)
    metrics = evaluate_models(stores, subspaces, inp.coefficients, view, p.ks,
                              evaluator, p.splits, seed=p.seed, use_bank=p.bank)
    comp = compression_table(ModelStore(stores[0]), subspaces, view, p.ks, len(stores))
    for line in saturation_warnings(comp, subspaces):
        log.warning(line)
    metrics = metrics.merge(comp[["method", "k", "compression"]], on=["method", "k"], how="left")
    write_table(metrics, smk.output.metrics)
    write_table(comp, smk.output.compression)
