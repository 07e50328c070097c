"""Merging figure: normalised accuracy per method and set size, with the testbed diagnostics in the title."""
import pandas as pd

from weightspace import figures, merge
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    inp = smk.input
    diag = pd.read_csv(inp.diagnostics)
    _, verdict = merge.testbed_verdict(diag)
    figures.merge_figure(pd.read_csv(inp.summary), diag, f"{smk.params.title}\n{verdict}", smk.output[0])
