# project: coefficients of every model (basis and held-out) on the basis models' subspace,
# and the fraction of each model's centred energy kept at every k of the sweep.


rule project:
    input:
        stores=lambda w: stores(w.c),
        screen="results/{c}/screen.tsv",
        subspace=lambda w: subspace_groups(w.c, w.view),
    output:
        coefficients=directory("results/{c}/project/{view}/coefficients.zarr"),
        energy="results/{c}/project/{view}/energy.parquet",
    params:
        ks=config["project"]["ks"],
        splits=lambda w: splits(w.c),
        code=script_code("project.py"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "logs/{c}/project/{view}.log",
    script:
        "../scripts/project.py"
