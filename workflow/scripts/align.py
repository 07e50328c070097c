"""Alignment of every model pair with every metric; matrices, heatmap, weights-vs-alignment."""
from pathlib import Path

from weightspace import figures
from weightspace.io import write_table
from weightspace.representations import alignment_table, load_features, matrix, weight_similarity
from weightspace.runtime import job, return_large_frees, script
from weightspace.subspace import load_subspaces

smk = job(globals())

with script(smk) as log:
    return_large_frees()  # n×n temporaries per model, n·k numbers kept: memory flat in the models
    inp, out, p = smk.input, smk.output, smk.params
    s = p.settings
    features, keys = load_features(inp.features)
    table = alignment_table(features, keys, s["metrics"], s["topk"], s["cca_dim"], s["layers"],
                            s.get("clamp_quantile"))
    write_table(table, out.table)
    Path(out.matrices).mkdir(parents=True, exist_ok=True)
    for metric in s["metrics"]:
        for variant in ("original", "projected"):
            write_table(matrix(table, metric, variant, keys).reset_index(names="model"),
                        f"{out.matrices}/{metric}_{variant}.parquet")
    subspaces, basis = load_subspaces(list(inp.subspace))
    tasks = p.tasks
    figures.alignment_heatmap(table, keys, tasks, s["metrics"][0], p.k, p.title, out.heatmap)
    figures.alignment_vs_weights(table, weight_similarity(subspaces, basis), tasks, p.title, out.weights)
    figures.alignment_projection(table, p.k, p.title, out.projection)
