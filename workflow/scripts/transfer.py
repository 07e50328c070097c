"""One collection's subspace against another's models: projections, captured energy, overlaps."""
import pandas as pd

from weightspace import figures, transfer
from weightspace.collection import accepted_stores
from weightspace.evaluators.registry import make_evaluator
from weightspace.io import write_table
from weightspace.runtime import job, script
from weightspace.store import ModelStore
from weightspace.subspace import load_subspaces

smk = job(globals())

with script(smk) as log:
    inp, out, p, w = smk.input, smk.output, smk.params, smk.wildcards
    s = p.settings
    a_subs, _ = load_subspaces(list(inp.a))
    b_subs, b_basis = load_subspaces(list(inp.b))
    stores = [ModelStore(path) for path in accepted_stores(list(inp.stores), inp.screen)]
    comparisons = transfer.meeting_modes(a_subs, b_subs, p.matches)
    if not comparisons:
        raise ValueError(f"transfer {w.a} → {w.b}: no matrix of one shape and no mode of one dimension "
                         "where the architectures meet; declare one: transfer.pairs "
                         "[A, B, [[\"<matrix>:row\", \"<matrix>:row\"]]]")
    basis = [st for st in stores if st.key in set(b_basis)]
    grams = transfer.centred_grams(basis, b_subs, p.view, sorted({(c["b"], c["mode"]) for c in comparisons}))
    energy = transfer.energy_table(a_subs, b_subs, grams, comparisons, p.k, s["draws"], s["seed"],
                                   p.margin, p.fdr, s["share_of_own"])
    write_table(energy, out.energy)
    proj = None
    if transfer.same_shapes(a_subs, b_subs):
        evaluator = make_evaluator(p.evaluator, data_seed=p.data_seed, base_folder=p.base, evaluation=p.evaluation)
        proj = transfer.projection_table(stores, a_subs, b_subs, p.view, p.ks, evaluator, p.splits, seed=p.seed)
    write_table(proj if proj is not None else energy.iloc[:0], out.projection)
    summary = transfer.summary_row(w.a, w.b, p.view, energy, proj, p.k, p.share)
    write_table(pd.DataFrame([summary]), out.summary)
    figures.transfer_figure(energy, proj, summary, out.figure)
    log.info("%s → %s: %s", w.a, w.b, summary)
