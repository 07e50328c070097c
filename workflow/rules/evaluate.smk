# evaluate: errors and task accuracy of original, projected and baseline models at every k,
# and the memory accounting (bytes stored vs the originals).


rule evaluate:
    input:
        stores=lambda w: stores(w.c),
        screen="results/{c}/screen.tsv",
        subspace=lambda w: subspace_groups(w.c, w.view),
        coefficients="results/{c}/project/{view}/coefficients.zarr",
        zoo=lambda w: stage_inputs(w.c),
        evaluation_files=lambda w: evaluation_files(w.c),
    output:
        metrics="results/{c}/evaluate/{view}/metrics.parquet",
        compression="results/{c}/evaluate/{view}/compression.csv",
    params:
        ks=config["project"]["ks"],
        splits=lambda w: splits(w.c),
        evaluator=lambda w: config["collections"][w.c]["evaluator"],
        base=lambda w: base_folder(w.c),
        evaluation=lambda w: evaluation(w.c),
        data_seed=config["data_seed"],
        seed=config["evaluate"]["seed"],
        bank=config["evaluate"]["bank"],
        code=script_code("evaluate.py"),
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "logs/{c}/evaluate/{view}.log",
    script:
        "../scripts/evaluate.py"
