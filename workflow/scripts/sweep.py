"""The basis-size sweep of one view: held-out error and sharing against the number of basis models."""
from weightspace.collection import accepted_stores
from weightspace.io import write_table
from weightspace.runtime import job, script
from weightspace.subspace import load_subspaces
from weightspace.sweep import sweep

smk = job(globals())

with script(smk) as log:
    inp, p = smk.input, smk.params
    table = sweep(accepted_stores(list(inp.basis), inp.screen), accepted_stores(list(inp.heldout), inp.screen),
                  smk.wildcards.view, p.sizes, k=p.k, seed=p.seed, null_draws=p.null_draws,
                  test_k=p.test_k, fdr=p.fdr, margin=p.margin, max_k=p.max_k, center=p.center,
                  stage=load_subspaces(list(inp.subspace)))
    write_table(table, smk.output.table)
