"""Every transfer pair's verdict in one table and one collections × collections figure."""
import pandas as pd

from weightspace import figures
from weightspace.io import write_table
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    summary = pd.concat([pd.read_csv(p) for p in smk.input.summaries], ignore_index=True)
    write_table(summary, smk.output.summary)
    figures.transfer_matrix_figure(summary, smk.output.figure)
    log.info("transfer pairs:\n%s", summary.to_string())
