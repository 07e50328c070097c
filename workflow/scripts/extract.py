"""safetensors model folder -> one Zarr store per model."""
from weightspace.extract import extract_model
from weightspace.runtime import script

with script(snakemake) as log:  # noqa: F821
    extract_model(snakemake.params.folder, snakemake.output[0], snakemake.wildcards.model,  # noqa: F821
                  snakemake.params.row)  # noqa: F821
