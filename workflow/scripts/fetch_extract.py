"""Describe and extract every model of a zoo collection, or of a batch of a local one (fetch + extract, one job)."""
from tqdm import tqdm

from weightspace.collection import placed, read_table
from weightspace.extract import extract_from_manifest
from weightspace.hub import manifest_for
from weightspace.io import write_json
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    out, rows = smk.output, smk.params.rows
    if smk.params.get("lock"):  # a local batch: each folder where the lock has it now
        lock = read_table(smk.params.lock)
        rows = [placed(r, lock) for r in rows]
    for row, manifest_path, store in tqdm(list(zip(rows, out.manifests, out.stores)),
                                          desc="fetch+extract", unit="model", mininterval=5):
        man = manifest_for(row)
        if man["status"] != "ok":
            log.warning("model %s rejected: %s", row["key"], man["reason"])
        write_json(man, manifest_path)
        extract_from_manifest(man, store, row["key"], row)
