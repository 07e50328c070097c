"""Describe and extract every model of a zoo collection (fetch + extract, one job)."""
from tqdm import tqdm

from weightspace.extract import extract_from_manifest
from weightspace.hub import manifest_for
from weightspace.io import write_json
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    out = smk.output
    for row, manifest_path, store in tqdm(list(zip(smk.params.rows, out.manifests, out.stores)),
                                          desc="fetch+extract", unit="model", mininterval=5):
        man = manifest_for(row)
        if man["status"] != "ok":
            log.warning("model %s rejected: %s", row["key"], man["reason"])
        write_json(man, manifest_path)
        extract_from_manifest(man, store, row["key"], row)
