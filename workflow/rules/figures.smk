# figures and tables for the report (snakemake --report results/report.html).


rule figures:
    input:
        spectra="results/{c}/subspace/{view}/spectra.parquet",
        metrics="results/{c}/evaluate/{view}/metrics.parquet",
        compression="results/{c}/evaluate/{view}/compression.csv",
    output:
        spectra=report(
            "results/{c}/figures/{view}/spectra.png",
            caption="../report/spectra.rst",
            category="Spectra",
            subcategory="{c} [{view}]",
        ),
        accuracy=report(
            "results/{c}/figures/{view}/accuracy.png",
            caption="../report/accuracy.rst",
            category="Accuracy vs k",
            subcategory="{c} [{view}]",
        ),
        compression=report(
            "results/{c}/figures/{view}/compression.png",
            caption="../report/compression.rst",
            category="Compression",
            subcategory="{c} [{view}]",
        ),
    params:
        title=lambda w: f"{w.c} [{w.view}]",
        max_k=config["subspace"]["max_k"],
        code=code_version("figures"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/{c}/figures/{view}.log",
    conda:
        ENV
    script:
        "../scripts/figures.py"


rule overview:
    input:
        spectra=lambda w: [
            f"results/{c}/subspace/{v}/spectra.parquet"
            for c in config["collections"]
            for v in views(c)
        ],
        metrics=lambda w: [
            f"results/{c}/evaluate/{v}/metrics.parquet"
            for c in config["collections"]
            for v in views(c)
        ],
        compression=lambda w: [
            f"results/{c}/evaluate/{v}/compression.csv"
            for c in config["collections"]
            for v in views(c)
        ],
        listings=lambda w: [f"results/{c}/collection.csv" for c in config["collections"]],
    output:
        overview=report(
            "results/figures/overview_spectra.png",
            caption="../report/overview.rst",
            category="Overview",
        ),
        summary=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Overview",
        ),
    params:
        labels=lambda w: [(c, v) for c in config["collections"] for v in views(c)],
        k=config["report"]["k"],
        max_k=config["subspace"]["max_k"],
        code=code_version("figures"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/overview.log",
    conda:
        ENV
    script:
        "../scripts/overview.py"
