"""The bank of a view at k: one basis, every model's coefficients and kept tensors."""
from weightspace.bank import write_bank
from weightspace.collection import accepted_stores
from weightspace.io import write_table
from weightspace.runtime import job, script
from weightspace.subspace import load_subspaces

smk = job(globals())

with script(smk) as log:
    inp, w = smk.input, smk.wildcards
    subspaces, _ = load_subspaces(list(inp.subspace))
    bank, serving = write_bank(accepted_stores(list(inp.stores), inp.screen), subspaces, inp.coefficients,
                               w.view, int(w.k), smk.output.bank, base=smk.params.base or "")
    write_table(serving, smk.output.serving)
    log.info("%r", bank)
