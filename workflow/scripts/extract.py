"""Model folder (from the fetch manifest) -> one Zarr store per model."""
import json

from weightspace.collection import placed
from weightspace.extract import extract_from_manifest
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    manifest = json.loads(open(smk.input[0]).read())
    extract_from_manifest(manifest, smk.output[0], smk.wildcards.model,
                          placed(smk.params.row, smk.params.lock))
