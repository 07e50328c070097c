"""The models of two collections aligned with each other on the same probe items."""
from weightspace import figures
from weightspace.io import write_table
from weightspace.representations import across_summary, across_table, check_same_probe, load_member
from weightspace.runtime import job, return_large_frees, script

smk = job(globals())

with script(smk) as log:
    return_large_frees()  # n×n temporaries per model, n·k numbers kept: memory flat in the models
    inp, out, s, w = smk.input, smk.output, smk.params.settings, smk.wildcards
    fa, attrs_a = load_member(inp.a, w.a.endswith("@base"), s["across_models"])
    fb, attrs_b = load_member(inp.b, w.b.endswith("@base"), s["across_models"])
    check_same_probe(attrs_a, attrs_b, w.a, w.b)
    table = across_table(fa, fb, s["metrics"], s["topk"], s["cca_dim"], s["layers"], s.get("clamp_quantile"))
    write_table(table, out.table)
    summary = across_summary(table)
    summary.insert(0, "b", w.b)
    summary.insert(0, "a", w.a)
    write_table(summary, out.summary)
    tasks = [{**t, "base": "base"} for t in smk.params.tasks]
    figures.alignment_across(table, summary, tasks, s["metrics"][0], w.a, w.b, out.heatmap, s["layers"])
    log.info("%s ~ %s: %s", w.a, w.b, summary.to_dict("records"))
