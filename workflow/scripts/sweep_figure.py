"""Figure of the basis-size sweep."""
import pandas as pd

from weightspace import figures
from weightspace.runtime import script

with script(snakemake) as log:  # noqa: F821
    figures.sweep_figure(pd.read_csv(snakemake.input[0]), snakemake.params.title, snakemake.output[0])  # noqa: F821
