"""Coefficients of every model on the basis models' subspace."""
from weightspace.collection import accepted_stores
from weightspace.io import write_table
from weightspace.project import project_models
from weightspace.runtime import job, script
from weightspace.subspace import load_subspaces

smk = job(globals())

with script(smk) as log:
    subspaces, _ = load_subspaces(list(smk.input.subspace))
    energy = project_models(accepted_stores(list(smk.input.stores), smk.input.screen),
                            subspaces, smk.wildcards.view,
                            smk.output.coefficients, smk.params.ks, smk.params.splits)
    write_table(energy, smk.output.energy)
