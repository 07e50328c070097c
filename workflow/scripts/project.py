"""Coefficients of every model on the basis models' subspace."""
from weightspace.collection import accepted_stores
from weightspace.io import write_table
from weightspace.project import project_models
from weightspace.runtime import script
from weightspace.subspace import load_subspaces

with script(snakemake) as log:  # noqa: F821
    subspaces, _ = load_subspaces(list(snakemake.input.subspace))  # noqa: F821
    energy = project_models(accepted_stores(list(snakemake.input.stores), snakemake.input.screen),  # noqa: F821
                            subspaces, snakemake.wildcards.view,  # noqa: F821
                            snakemake.output.coefficients, snakemake.params.ks, snakemake.params.splits)  # noqa: F821
    write_table(energy, snakemake.output.energy)  # noqa: F821
