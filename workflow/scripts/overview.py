"""All collections together: the spectra overview, the verdict (summary.csv: one row per
collection and view) and the per-method table (methods.csv)."""
from pathlib import Path

import pandas as pd

from weightspace import figures
from weightspace.io import atomic_path, write_table
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    inp, out, p = smk.input, smk.output, smk.params
    spectra, methods, verdicts, tests = [], [], [], []
    for (c, v), s, m, comp, sh in zip(p.labels, inp.spectra, inp.metrics, inp.compression, inp.sharing):
        metrics, sharing = pd.read_parquet(m), pd.read_csv(sh)
        spectra.append(pd.read_parquet(s).assign(collection=c, view=v))
        tests.append(sharing.assign(collection=c, view=v))
        methods.append(figures.summary_table(metrics, pd.read_csv(comp), p.k).assign(collection=c, view=v))
        verdicts.append({"collection": c, "view": v,
                         **figures.verdict_row(sharing, metrics, p.k, p.fdr, p.margin, p.share)})
    figures.overview_figure(pd.concat(spectra, ignore_index=True), pd.concat(tests, ignore_index=True),
                            out.overview, p.max_k)
    figures.serving_figure([pd.read_csv(f).assign(collection=c, view=v, k=k)
                            for (c, v, k), f in zip(p.serving_labels, inp.serving)], out.serving)
    verdicts = pd.DataFrame(verdicts)
    write_table(verdicts, out.summary)
    with atomic_path(out.summary_html) as tmp:
        transfer = [pd.read_csv(f) for f in inp.transfer]
        Path(tmp).write_text(figures.verdict_html(verdicts)
                             + (figures.transfer_html(pd.concat(transfer, ignore_index=True)) if transfer else ""))
    methods = pd.concat(methods, ignore_index=True)
    methods = methods[["collection", "view"] + [c for c in methods if c not in ("collection", "view")]]
    write_table(methods, out.methods)
    with atomic_path(out.methods_html) as tmp:
        Path(tmp).write_text(figures.methods_html(methods))
