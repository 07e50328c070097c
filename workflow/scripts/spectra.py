"""All spectra of a view (data and nulls) as one long table, and its sharing test per matrix."""
from weightspace.io import write_table
from weightspace.runtime import job, script
from weightspace.subspace import sharing_table, spectra_table

smk = job(globals())

with script(smk) as log:
    paths, out = list(smk.input), smk.output
    write_table(spectra_table(paths), out.spectra)
    p = smk.params
    write_table(sharing_table(paths, p.fdr, p.margin), out.sharing)
