# extract: one job per model, safetensors -> results/{c}/weights/{model}.zarr (one writer per
# store; source dtype kept, bf16 as uint16 bits; one tensor in memory at a time).


rule extract:
    input:
        model_source,
    output:
        directory("results/{c}/weights/{model}.zarr"),
    params:
        folder=lambda w: model_path(w.c, w.model),
        row=lambda w: table(w.c).set_index("key").loc[w.model].to_dict(),
        code=code_version("extract", "layers", "store", "io"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    log:
        "logs/{c}/extract/{model}.log",
    conda:
        ENV
    script:
        "../scripts/extract.py"
