# merge: several models of a collection merged into one (PEFT's merge utilities beside merging
# in the shared subspace); every task scored with its own head, normalised by its own model
# (weightspace.merge).


rule merge:
    input:
        subspace=lambda w: subspace_groups(w.c, w.view),
        stores=lambda w: stores(w.c),
        screen="results/{c}/screen.tsv",
        zoo=lambda w: stage_inputs(w.c),
        evaluation_files=lambda w: evaluation_files(w.c),
    output:
        scores="results/{c}/merge/{view}/scores.parquet",
        diagnostics="results/{c}/merge/{view}/diagnostics.csv",
        summary=report(
            "results/{c}/merge/{view}/summary.csv",
            caption="../report/merge_summary.rst",
            category="9. Merging",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "table": "merge summary"},
        ),
    params:
        settings=lambda w: merge_settings(w.c),
        splits=lambda w: splits(w.c),
        evaluator=lambda w: config["collections"][w.c]["evaluator"],
        base=lambda w: base_folder(w.c),
        evaluation=lambda w: evaluation(w.c),
        data_seed=config["data_seed"],
        code=script_code("merge.py"),
    priority: 30  # long jobs start as soon as they can (the demo's 2 cores stay busy to the end)
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=4000,
        runtime=60,
    log:
        "logs/{c}/merge/{view}.log",
    script:
        "../scripts/merge.py"


rule merge_figure:
    input:
        summary="results/{c}/merge/{view}/summary.csv",
        diagnostics="results/{c}/merge/{view}/diagnostics.csv",
    output:
        report(
            "results/{c}/figures/{view}/merge_normalised_accuracy.png",
            caption="../report/merge.rst",
            category="9. Merging",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "figure": "normalised accuracy per method"},
        ),
    params:
        title=lambda w: f"{w.c} [{w.view}]",
        code=script_code("merge_figure.py"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/{c}/merge/{view}_figure.log",
    script:
        "../scripts/merge_figure.py"
