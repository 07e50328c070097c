"""Per-collection figures: accuracy (or error) vs k and vs stored bytes."""
import pandas as pd

from weightspace import figures
from weightspace.runtime import script

with script(snakemake) as log:  # noqa: F821
    inp, out, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    metrics = pd.read_parquet(inp.metrics)
    figures.accuracy_figure(metrics, p.title, out.accuracy)
    figures.compression_figure(metrics, pd.read_csv(inp.compression), p.title, out.compression)
