"""Train a zoo collection and write its model folders."""
from weightspace.runtime import script
from weightspace.zoo import build_zoo

with script(snakemake) as log:  # noqa: F821
    build_zoo(snakemake.params.spec, snakemake.output[0], snakemake.params.data_seed, log=log.info)  # noqa: F821
