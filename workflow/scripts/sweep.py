"""The basis-size sweep of one view: held-out error and sharing against the number of basis models."""
from weightspace.collection import accepted_stores
from weightspace.io import write_table
from weightspace.runtime import script
from weightspace.sweep import sweep

with script(snakemake) as log:  # noqa: F821
    inp, p = snakemake.input, snakemake.params  # noqa: F821
    table = sweep(accepted_stores(list(inp.basis), inp.screen), accepted_stores(list(inp.heldout), inp.screen),
                  snakemake.wildcards.view, p.sizes, k=p.k, seed=p.seed, null_draws=p.null_draws,  # noqa: F821
                  test_k=p.test_k, fdr=p.fdr, margin=p.margin, max_k=p.max_k, center=p.center)
    write_table(table, snakemake.output.table)  # noqa: F821
