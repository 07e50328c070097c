"""The collection table as CSV for people and the report."""
from weightspace.collection import read_table
from weightspace.io import write_table
from weightspace.runtime import script

with script(snakemake) as log:  # noqa: F821
    write_table(read_table(snakemake.input[0]), snakemake.output[0])  # noqa: F821
