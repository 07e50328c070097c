# align: representations of a probe set for every model (original, and projected at align.k),
# their alignment across models with every metric, beside the models' weight-space similarity.
# align_across: the models of two collections against each other (align.across), same probe.


rule align_features:
    input:
        stores=lambda w: stores(w.c),
        screen="results/{c}/screen.tsv",
        subspace=lambda w: subspace_groups(w.c, w.view),
        coefficients="results/{c}/project/{view}/coefficients.zarr",
        zoo=lambda w: stage_inputs(w.c),
        evaluation_files=lambda w: evaluation_files(w.c, probe=True),
    output:
        directory("results/{c}/align/{view}/features.zarr"),
    params:
        k=align_k(),
        n=config["align"]["probe_size"],
        probe=config["align"].get("probe"),
        pooling=config["align"]["pooling"],
        evaluator=lambda w: config["collections"][w.c]["evaluator"],
        base=lambda w: base_folder(w.c),
        evaluation=lambda w: evaluation(w.c),
        data_seed=config["data_seed"],
        code=script_code("align_features.py"),
    threads: lambda w: job_threads(config["align"]["threads"], w.c)
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/{c}/align/{view}/features.log",
    script:
        "../scripts/align_features.py"


rule align:
    input:
        features="results/{c}/align/{view}/features.zarr",
        subspace=lambda w: subspace_groups(w.c, w.view),
    output:
        table="results/{c}/align/{view}/alignment.parquet",
        matrices=directory("results/{c}/align/{view}/matrices"),
        heatmap=report(
            "results/{c}/figures/{view}/alignment_heatmap.png",
            caption="../report/alignment_heatmap.rst",
            category="7. Alignment",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "figure": "alignment heatmap"},
        ),
        weights=report(
            "results/{c}/figures/{view}/alignment_vs_weights.png",
            caption="../report/alignment_vs_weights.rst",
            category="7. Alignment",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "figure": "alignment vs weight similarity"},
        ),
        projection=report(
            "results/{c}/figures/{view}/alignment_projection.png",
            caption="../report/alignment_projection.rst",
            category="7. Alignment",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "figure": "alignment after projection"},
        ),
    params:
        settings=config["align"],
        k=align_k(),
        title=lambda w: f"{w.c} [{w.view}]",
        tasks=lambda w: task_map(w.c),
        code=script_code("align.py"),
    priority: 20  # long jobs start as soon as they can (the demo's 2 cores stay busy to the end)
    threads: lambda w: job_threads(config["align"]["threads"], w.c)
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "logs/{c}/align/{view}/align.log",
    script:
        "../scripts/align.py"


rule align_across:
    input:
        a=lambda w: across_features(w.a),
        b=lambda w: across_features(w.b),
    output:
        table="results/across/{a}~{b}/alignment.parquet",
        summary=report(
            "results/across/{a}~{b}/summary.csv",
            caption="../report/alignment_across.rst",
            category="7. Alignment",
            subcategory="across collections",
            labels={"pair": "{a} ~ {b}", "table": "mean alignment across, within, null"},
        ),
        heatmap=report(
            "results/across/{a}~{b}/alignment_heatmap.png",
            caption="../report/alignment_across.rst",
            category="7. Alignment",
            subcategory="across collections",
            labels={"pair": "{a} ~ {b}", "figure": "alignment across collections"},
        ),
    wildcard_constraints:
        a=r"[A-Za-z0-9][A-Za-z0-9_.\-]*?(@base)?",
        b=r"[A-Za-z0-9][A-Za-z0-9_.\-]*?(@base)?",
    params:
        settings=config["align"],
        tasks=lambda w: [task_map(w.a.removesuffix("@base")), task_map(w.b.removesuffix("@base"))],
        code=script_code("align_across.py"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "logs/across/{a}~{b}.log",
    script:
        "../scripts/align_across.py"
