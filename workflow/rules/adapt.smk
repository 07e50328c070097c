# adapt: tasks the basis never saw, learned by training only coefficients in the shared
# subspace, beside PEFT's small-budget tuners, plain LoRA, full fine-tuning, head only, a random
# basis of the same k and no training (weightspace.adapt).


rule adapt:
    input:
        subspace=lambda w: subspace_groups(w.c, w.view),
        stores=lambda w: stores(w.c, "basis"),
        screen="results/{c}/screen.tsv",
        zoo=lambda w: stage_inputs(w.c),
        evaluation_files=lambda w: evaluation_files(w.c),
    output:
        results="results/{c}/adapt/{view}/results.parquet",
        sweep="results/{c}/adapt/{view}/lr_sweep.parquet",
        summary=report(
            "results/{c}/adapt/{view}/summary.csv",
            caption="../report/adapt_summary.rst",
            category="8. Adaptation",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "table": "adapt summary"},
        ),
        paired=report(
            "results/{c}/adapt/{view}/paired.csv",
            caption="../report/adapt_paired.rst",
            category="8. Adaptation",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "table": "paired differences"},
        ),
        export=directory("results/{c}/adapt/{view}/export"),
    params:
        settings=lambda w: config["collections"][w.c]["adapt"],
        base=lambda w: base_folder(w.c),
        evaluator=lambda w: config["collections"][w.c]["evaluator"],
        taken=lambda w: sorted(set(table(w.c)["task"])),
        families=lambda w: collection_families(w.c),
        data_seed=config["data_seed"],
        dataset=lambda w: zoo_dataset(w.c),
        code=script_code("adapt.py"),
    priority: 50  # long jobs start as soon as they can (the demo's 2 cores stay busy to the end)
    threads: lambda w: 2 if text_zoo(w.c) else 1
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "logs/{c}/adapt/{view}.log",
    script:
        "../scripts/adapt.py"


rule adapt_figure:
    input:
        summary="results/{c}/adapt/{view}/summary.csv",
    output:
        report(
            "results/{c}/figures/{view}/adapt_accuracy_vs_trainable.png",
            caption="../report/adapt.rst",
            category="8. Adaptation",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "figure": "accuracy vs trainable numbers"},
        ),
    params:
        title=lambda w: f"{w.c} [{w.view}]",
        code=script_code("adapt_figure.py"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/{c}/adapt/{view}_figure.log",
    script:
        "../scripts/adapt_figure.py"
