"""Per-collection figures: accuracy (or error) vs k and vs stored bytes."""
import pandas as pd

from weightspace import figures
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    inp, out, p = smk.input, smk.output, smk.params
    metrics = pd.read_parquet(inp.metrics)
    figures.accuracy_figure(metrics, p.title, out.accuracy)
    figures.compression_figure(metrics, pd.read_csv(inp.compression), p.title, out.compression)
