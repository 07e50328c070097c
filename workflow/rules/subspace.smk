# subspace: one job per layer group of a view; streams every basis model's matrix once into
# float64 sums (Σ W, Σ W Wᵀ, Σ Wᵀ W), eigendecomposes, writes mean, basis, spectra and nulls.


rule subspace:
    input:
        stores=lambda w: stores(w.c, "basis"),
        screen="results/{c}/screen.tsv",
    output:
        directory("results/{c}/subspace/{view}/group-{g}.zarr"),
    params:
        n_groups=config["subspace"]["layer_groups"],
        center=config["subspace"]["center"],
        max_k=config["subspace"]["max_k"],
        gaussian_null=config["subspace"]["gaussian_null"],
        rotation_null=config["subspace"]["rotation_null"],
        null_draws=config["subspace"]["null_draws"],
        test_k=config["subspace"]["test_k"],
        seed=config["subspace"]["seed"],
        device=config["subspace"]["device"],
        exact_max_dim=config["subspace"]["exact_max_dim"],
        sketch_when_cheaper=config["subspace"]["sketch_when_cheaper"],
        precision=config["subspace"]["precision"],
        model_gram=config["subspace"]["model_gram"],
        gram_sketch_width=config["subspace"]["gram_sketch_width"],
        # not an output: Snakemake deletes outputs before a rerun, and these sums must survive it
        cache=lambda w: (
            f"results/{w.c}/cache/{w.view}/group-{w.g}-of-{config['subspace']['layer_groups']}.zarr"
            if config["subspace"]["cache"]
            else None
        ),
        code=script_code("subspace.py"),
    threads: subspace_threads
    resources:
        mem_mb=subspace_mem_mb,
        runtime=60,
        gpu=config["subspace"]["gpus"],
    log:
        "logs/{c}/subspace/{view}/group-{g}.log",
    benchmark:
        "benchmarks/{c}/subspace/{view}/group-{g}.tsv"
    script:
        "../scripts/subspace.py"


# spectra: every spectrum of a view (data and nulls), its sharing test per matrix, and the
# figure of both (one job: the table is small and a job's start-up is most of its time).
rule spectra:
    input:
        lambda w: subspace_groups(w.c, w.view),
    output:
        spectra="results/{c}/subspace/{view}/spectra.parquet",
        sharing="results/{c}/subspace/{view}/sharing.csv",
        figure=report(
            "results/{c}/figures/{view}/spectra_vs_nulls.png",
            caption="../report/spectra.rst",
            category="2. Spectra",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "figure": "spectra vs nulls"},
        ),
    params:
        fdr=config["report"]["fdr"],
        margin=config["report"]["margin"],
        share=config["report"]["shared_share"],
        title=lambda w: f"{w.c} [{w.view}]",
        max_k=config["subspace"]["max_k"],
        code=script_code("spectra.py"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/{c}/subspace/{view}/spectra.log",
    script:
        "../scripts/spectra.py"
