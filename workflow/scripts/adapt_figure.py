"""Adaptation figure: accuracy against trainable numbers."""
import pandas as pd

from weightspace import figures
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    figures.adapt_figure(pd.read_csv(smk.input.summary), smk.params.title, smk.output[0])
