"""Download (Hub) or describe (zoo, local) one model; write its manifest or rejection."""
from weightspace.hub import manifest_for
from weightspace.io import write_json
from weightspace.runtime import script

with script(snakemake) as log:  # noqa: F821
    man = manifest_for(snakemake.params.row)  # noqa: F821
    if man["status"] != "ok":
        log.warning("rejected: %s", man["reason"])
    write_json(man, snakemake.output[0])  # noqa: F821
