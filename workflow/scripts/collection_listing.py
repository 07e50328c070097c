"""The collection table as CSV for people and the report."""
from weightspace.collection import read_table
from weightspace.io import write_table
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    write_table(read_table(smk.input[0]), smk.output[0])
