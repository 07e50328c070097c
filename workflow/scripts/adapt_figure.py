"""Adaptation figure: accuracy against trainable numbers."""
import pandas as pd

from weightspace import figures
from weightspace.runtime import script

with script(snakemake) as log:  # noqa: F821
    figures.adapt_figure(pd.read_csv(snakemake.input.summary), snakemake.params.title, snakemake.output[0])  # noqa: F821
