"""Train a zoo collection and write its model folders."""
from weightspace.runtime import job, script
from weightspace.zoo import build_zoo

smk = job(globals())

with script(smk) as log:
    if smk.params.spec["kind"] == "text-lora":  # the text zoo builds on the digits zoo's helpers
        from weightspace.textzoo import build_text_zoo as build
    else:
        build = build_zoo
    build(smk.params.spec, smk.output[0], smk.params.data_seed, log=log.info)
