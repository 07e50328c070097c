"""Merging figure: normalised accuracy per method, with the testbed diagnostics in the title."""
import pandas as pd

from weightspace import figures, merge
from weightspace.runtime import script

with script(snakemake) as log:  # noqa: F821
    inp = snakemake.input  # noqa: F821
    diag = pd.read_csv(inp.diagnostics)
    _, verdict = merge.testbed_verdict(diag)
    figures.merge_figure(pd.read_parquet(inp.scores), diag, f"{snakemake.params.title}\n{verdict}",  # noqa: F821
                         snakemake.output[0])  # noqa: F821
