"""Figure of the basis-size sweep."""
import pandas as pd

from weightspace import figures
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    figures.sweep_figure(pd.read_csv(smk.input[0]), smk.params.title, smk.output[0])
