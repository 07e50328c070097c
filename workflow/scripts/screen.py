"""Accept or reject every model of a collection (fetch failures, other architectures)."""
import json

from weightspace.collection import enforce_strict, screen
from weightspace.io import write_table
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    inp, p, out = smk.input, smk.params, smk.output
    mans = {}
    for path in inp.manifests:
        m = json.loads(open(path).read())
        mans[m["key"]] = m
    table = screen(mans, p.reference)
    rejected = table[table["status"] == "rejected"]
    for r in rejected.itertuples():
        log.warning("rejected %s: %s", r.key, r.reason)
    write_table(table, out.screen)
    write_table(rejected, out.rejected)
    if p.strict:
        enforce_strict(table)
