"""All spectra of a view (data and nulls) as one long table."""
from weightspace.io import write_table
from weightspace.runtime import script
from weightspace.subspace import spectra_table

with script(snakemake) as log:  # noqa: F821
    write_table(spectra_table(list(snakemake.input)), snakemake.output[0])  # noqa: F821
