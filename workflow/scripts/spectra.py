"""All spectra of a view (data and nulls) as one long table, and its sharing test per matrix."""
from weightspace.io import write_table
from weightspace.runtime import script
from weightspace.subspace import sharing_table, spectra_table

with script(snakemake) as log:  # noqa: F821
    paths, out = list(snakemake.input), snakemake.output  # noqa: F821
    write_table(spectra_table(paths), out.spectra)
    p = snakemake.params  # noqa: F821
    write_table(sharing_table(paths, p.fdr, p.margin), out.sharing)
