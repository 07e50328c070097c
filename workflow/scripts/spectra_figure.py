"""Per-collection figure: every matrix's spectra against its own nulls."""
import pandas as pd

from weightspace import figures
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    p = smk.params
    figures.spectra_figure(pd.read_parquet(smk.input[0]), p.title, smk.output[0], p.max_k)
