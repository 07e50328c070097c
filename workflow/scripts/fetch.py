"""Download (Hub) or describe (zoo, local) one model; write its manifest or rejection."""
from weightspace.collection import placed
from weightspace.hub import manifest_for
from weightspace.io import write_json
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    man = manifest_for(placed(smk.params.row, smk.params.lock))
    if man["status"] != "ok":
        log.warning("rejected: %s", man["reason"])
    write_json(man, smk.output[0])
