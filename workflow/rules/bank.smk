# bank: every model of a view at k served from one basis (weightspace.bank): the shared mean and
# factors once, each model's k×k coefficients and kept tensors; loadable without Snakemake
# (weightspace.api.load_bank), attached to a model skeleton it serves mixed batches.


rule bank:
    input:
        stores=lambda w: stores(w.c),
        screen="results/{c}/screen.tsv",
        subspace=lambda w: subspace_groups(w.c, w.view),
        coefficients="results/{c}/project/{view}/coefficients.zarr",
    output:
        bank=directory("results/{c}/bank/{view}/k{k}"),
        serving=report(
            "results/{c}/bank/{view}/k{k}-serving.csv",
            caption="../report/serving.rst",
            category="4. Compression",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "table": "serving N models at k={k}"},
        ),
    params:
        base=lambda w: base_folder(w.c),
        code=script_code("bank.py"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "logs/{c}/bank/{view}/k{k}.log",
    script:
        "../scripts/bank.py"
