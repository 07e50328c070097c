"""Compressed models in their source formats, and the collection's bundle."""
from weightspace.collection import accepted_stores
from weightspace.export import export_models, export_table
from weightspace.io import write_table
from weightspace.runtime import script
from weightspace.subspace import load_subspaces

with script(snakemake) as log:  # noqa: F821
    inp, w = snakemake.input, snakemake.wildcards  # noqa: F821
    subspaces, _ = load_subspaces(list(inp.subspace))
    rows = export_models(accepted_stores(list(inp.stores), inp.screen), subspaces, inp.coefficients,
                         w.view, int(w.k), snakemake.output.models, base=snakemake.params.base)  # noqa: F821
    write_table(export_table(rows), snakemake.output.sizes)  # noqa: F821
    log.info("exported %d models at k=%s (bundle %d bytes)", len(rows), w.k, rows[0]["bundle_bytes"] if rows else 0)
