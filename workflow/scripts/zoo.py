"""Train a zoo collection and write its model folders."""
from weightspace.runtime import job, script
from weightspace.zoo import build_zoo

smk = job(globals())

with script(smk) as log:
    build_zoo(smk.params.spec, smk.output[0], smk.params.data_seed, log=log.info)
