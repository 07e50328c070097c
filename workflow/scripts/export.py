"""Compressed models in their source formats, and the collection's bundle."""
from weightspace.collection import accepted_stores
from weightspace.export import export_models, export_table
from weightspace.io import write_table
from weightspace.runtime import job, script
from weightspace.subspace import load_subspaces

smk = job(globals())

with script(smk) as log:
    inp, w = smk.input, smk.wildcards
    subspaces, _ = load_subspaces(list(inp.subspace))
    rows = export_models(accepted_stores(list(inp.stores), inp.screen), subspaces, inp.coefficients,
                         w.view, int(w.k), smk.output.models, base=smk.params.base)
    write_table(export_table(rows), smk.output.sizes)
    log.info("exported %d models at k=%s (bundle %d bytes)", len(rows), w.k, rows[0]["bundle_bytes"] if rows else 0)
