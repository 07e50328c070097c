"""Probe-set representations of every model, original and projected at k."""
from weightspace.collection import accepted_stores
from weightspace.evaluators.registry import make_evaluator
from weightspace.representations import extract_features
from weightspace.runtime import job, script
from weightspace.subspace import load_subspaces

smk = job(globals())

with script(smk) as log:
    inp, p, view = smk.input, smk.params, smk.wildcards.view
    evaluation = {**p.evaluation, **({"data": p.probe} if p.probe else {})}  # align.probe: own probe set
    evaluator = make_evaluator(p.evaluator, data_seed=p.data_seed, base_folder=p.base, evaluation=evaluation)
    if not hasattr(evaluator, "features"):
        raise ValueError(f"evaluator {p.evaluator!r} has no representations: set align.enabled: false "
                         "or give the collection an evaluator")
    subspaces, _ = load_subspaces(list(inp.subspace))
    extract_features(accepted_stores(list(inp.stores), inp.screen), subspaces, inp.coefficients, view,
                     p.k, evaluator, p.n, smk.output[0], pooling=p.pooling)
