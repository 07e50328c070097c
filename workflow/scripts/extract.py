"""Model folder (from the fetch manifest) -> one Zarr store per model."""
import json

from weightspace.extract import extract_from_manifest
from weightspace.runtime import script

with script(snakemake) as log:  # noqa: F821
    manifest = json.loads(open(snakemake.input[0]).read())  # noqa: F821
    extract_from_manifest(manifest, snakemake.output[0], snakemake.wildcards.model,  # noqa: F821
                          snakemake.params.row)  # noqa: F821
