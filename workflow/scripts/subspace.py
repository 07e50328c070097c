"""One layer group of one view: streaming HOSVD over the basis models."""
from weightspace.collection import accepted_stores
from weightspace.runtime import job, pick_device, script
from weightspace.subspace import run_group

smk = job(globals())

with script(smk) as log:
    p = smk.params
    run_group(accepted_stores(list(smk.input.stores), smk.input.screen),
              smk.wildcards.view, p.n_groups,
              int(smk.wildcards.g), smk.output[0], max_k=p.max_k, center=p.center,
              gaussian_null=p.gaussian_null, rotation_null=p.rotation_null, seed=p.seed,
              device=pick_device(p.device), cache_path=p.cache,
              exact_max_dim=p.exact_max_dim, precision=p.precision,
              sketch_when_cheaper=p.sketch_when_cheaper, null_draws=p.null_draws, test_k=p.test_k,
              model_gram=p.model_gram, gram_sketch_width=p.gram_sketch_width)
