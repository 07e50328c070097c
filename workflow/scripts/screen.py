"""Accept or reject every model of a collection (fetch failures, other architectures)."""
from weightspace.collection import screen_step
from weightspace.runtime import job, script

smk = job(globals())

with script(smk) as log:
    inp, p, out = smk.input, smk.params, smk.output
    screen_step(list(inp.manifests), p.reference, p.strict, out.screen, out.rejected, log)
