"""One layer group of one view: streaming HOSVD over the basis models."""
from weightspace.collection import accepted_stores
from weightspace.runtime import pick_device, script
from weightspace.subspace import run_group

with script(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    run_group(accepted_stores(list(snakemake.input.stores), snakemake.input.screen),  # noqa: F821
              snakemake.wildcards.view, p.n_groups,  # noqa: F821
              int(snakemake.wildcards.g), snakemake.output[0], max_k=p.max_k, center=p.center,  # noqa: F821
              gaussian_null=p.gaussian_null, rotation_null=p.rotation_null, seed=p.seed,
              device=pick_device(p.device), cache_path=p.cache,
              exact_max_dim=p.exact_max_dim, precision=p.precision,
              sketch_when_cheaper=p.sketch_when_cheaper, null_draws=p.null_draws, test_k=p.test_k)
