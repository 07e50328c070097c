"""All collections together: the spectra overview and the summary table."""
import pandas as pd

from weightspace import figures
from weightspace.io import write_table
from weightspace.runtime import script

with script(snakemake) as log:  # noqa: F821
    inp, out, p = snakemake.input, snakemake.output, snakemake.params  # noqa: F821
    spectra, summary = [], []
    for (c, v), s, m, comp in zip(p.labels, inp.spectra, inp.metrics, inp.compression):
        spectra.append(pd.read_parquet(s).assign(collection=c, view=v))
        table = figures.summary_table(pd.read_parquet(m), pd.read_csv(comp), p.k)
        summary.append(table.assign(collection=c, view=v))
    figures.overview_figure(pd.concat(spectra, ignore_index=True), out.overview, p.max_k)
    summary = pd.concat(summary, ignore_index=True)
    write_table(summary[["collection", "view"] + [c for c in summary if c not in ("collection", "view")]],
                out.summary)
