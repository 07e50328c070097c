# figures and tables for the report (snakemake --report results/report.html).


rule figures:
    input:
        metrics="results/{c}/evaluate/{view}/metrics.parquet",
        compression="results/{c}/evaluate/{view}/compression.csv",
    output:
        accuracy=report(
            "results/{c}/figures/{view}/{q}_vs_k.png",
            caption="../report/accuracy.rst",
            category="3. Projection vs k",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "figure": "{q} vs k"},
        ),
        compression=report(
            "results/{c}/figures/{view}/{q}_vs_bytes.png",
            caption="../report/compression.rst",
            category="4. Compression",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "figure": "{q} vs stored bytes"},
        ),
    params:
        title=lambda w: f"{w.c} [{w.view}]",
        max_k=config["subspace"]["max_k"],
        code=script_code("figures.py"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    wildcard_constraints:
        q="accuracy|error",
    log:
        "logs/{c}/figures/{view}-{q}.log",
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
        sharing=lambda w: [
            f"results/{c}/subspace/{v}/sharing.csv"
            for c in config["collections"]
            for v in views(c)
        ],
        listings=lambda w: [f"results/{c}/collection.csv" for c in config["collections"]],
        serving=lambda w: serving_tables(),
        transfer=lambda w: [f"results/transfer/{a}~{b}/summary.csv" for a, b, _ in transfer_pairs()],
    output:
        overview=report(
            "results/figures/overview_sharing.png",
            caption="../report/overview.rst",
            category="1. Verdict",
            labels={"figure": "excess over the rotation null, all collections"},
        ),
        summary=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="1. Verdict",
            labels={"table": "verdict per collection and view"},
        ),
        summary_html=report(
            "results/summary.html",
            caption="../report/summary.rst",
            category="1. Verdict",
            labels={"table": "verdict (rendered)"},
        ),
        serving=report(
            "results/figures/serving.png",
            caption="../report/serving_figure.rst",
            category="4. Compression",
            labels={"figure": "serving N models: bank, dense copies, PEFT adapters"},
        ),
        methods=report(
            "results/methods.csv",
            caption="../report/methods.rst",
            category="1. Verdict",
            labels={"table": "every method at the report's k"},
        ),
        methods_html=report(
            "results/methods.html",
            caption="../report/methods.rst",
            category="1. Verdict",
            labels={"table": "every method at the report's k (rendered)"},
        ),
    params:
        labels=lambda w: [(c, v) for c in config["collections"] for v in views(c)],
        serving_labels=lambda w: serving_labels(),
        k=config["report"]["k"],
        fdr=config["report"]["fdr"],
        margin=config["report"]["margin"],
        share=config["report"]["shared_share"],
        max_k=config["subspace"]["max_k"],
        code=script_code("overview.py"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/overview.log",
    script:
        "../scripts/overview.py"
