# sweep: the decomposition and the sharing test redone on nested, seeded draws of N basis
# models (N up to all of them), with the held-out models fixed: does the answer converge? At
# N = all the subspace stage's own decomposition and test are read, not computed again.


rule sweep:
    input:
        basis=lambda w: stores(w.c, "basis"),
        heldout=lambda w: stores(w.c, "heldout"),
        screen="results/{c}/screen.tsv",
        subspace=lambda w: subspace_groups(w.c, w.view),  # N = all: the stage's own result
    output:
        table="results/{c}/sweep/{view}/basis_size.csv",
    params:
        sizes=lambda w: config["collections"][w.c]["sweep"]["sizes"],
        seed=lambda w: config["collections"][w.c]["sweep"].get("seed", 0),
        k=config["report"]["k"],
        max_k=config["subspace"]["max_k"],
        center=config["subspace"]["center"],
        null_draws=lambda w: config["collections"][w.c]["sweep"].get("null_draws", config["subspace"]["null_draws"]),
        test_k=config["subspace"]["test_k"],
        fdr=config["report"]["fdr"],
        margin=config["report"]["margin"],
        code=script_code("sweep.py"),
    priority: 40  # long jobs start as soon as they can (the demo's 2 cores stay busy to the end)
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "logs/{c}/sweep/{view}.log",
    script:
        "../scripts/sweep.py"


rule sweep_figure:
    input:
        "results/{c}/sweep/{view}/basis_size.csv",
    output:
        report(
            "results/{c}/figures/{view}/error_vs_basis_size.png",
            caption="../report/sweep.rst",
            category="5. Basis size",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "figure": "held-out error vs basis size"},
        ),
    params:
        title=lambda w: f"{w.c} [{w.view}]",
        code=script_code("sweep_figure.py"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/{c}/figures/{view}-sweep.log",
    script:
        "../scripts/sweep_figure.py"
