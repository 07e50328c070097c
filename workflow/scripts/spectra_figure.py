"""Per-collection figure: every matrix's spectra against its own nulls."""
import pandas as pd

from weightspace import figures
from weightspace.runtime import script

with script(snakemake) as log:  # noqa: F821
    p = snakemake.params  # noqa: F821
    figures.spectra_figure(pd.read_parquet(snakemake.input[0]), p.title, snakemake.output[0], p.max_k)  # noqa: F821
