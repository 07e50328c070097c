"""All spectra of a view (data and nulls) as one long table, its sharing test per matrix, and
the figure of every matrix's spectra against its own nulls."""
from weightspace import figures
from weightspace.io import write_table
from weightspace.runtime import job, script
from weightspace.spectra import sharing_table, spectra_table

smk = job(globals())

with script(smk) as log:
    paths, out, p = list(smk.input), smk.output, smk.params
    spectra = spectra_table(paths)
    write_table(spectra, out.spectra)
    write_table(sharing_table(paths, p.fdr, p.margin, p.share), out.sharing)
    figures.spectra_figure(spectra, p.title, out.figure, p.max_k)
