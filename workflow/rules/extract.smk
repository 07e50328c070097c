# fetch: one job per model: download a Hub model (safetensors + json, into the HF cache) or
# describe a zoo/local folder; writes a manifest (files, bytes, sha256, tensors) or a rejection.
# extract: one job per model, safetensors -> results/{c}/weights/{model}.zarr (one writer per
# store; source dtype kept, bf16 as uint16 bits; one tensor in memory at a time).
# screen: every manifest against the reference architecture -> screen.tsv and rejected.tsv.


rule fetch:
    input:
        model_source,
    output:
        "results/{c}/manifests/{model}.json",
    params:
        row=lambda w: row(w.c, w.model),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,
    log:
        "logs/{c}/fetch/{model}.log",
    script:
        "../scripts/fetch.py"


rule screen:
    input:
        manifests=lambda w: manifests(w.c),
    output:
        screen="results/{c}/screen.tsv",
        rejected="results/{c}/rejected.tsv",
    params:
        reference=lambda w: config["collections"][w.c].get("reference"),
        strict=lambda w: config["collections"][w.c]["strict"],
        code=script_code("screen.py"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/{c}/screen.log",
    script:
        "../scripts/screen.py"


rule extract:
    input:
        "results/{c}/manifests/{model}.json",
    output:
        directory("results/{c}/weights/{model}.zarr"),
    params:
        row=lambda w: row(w.c, w.model),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    log:
        "logs/{c}/extract/{model}.log",
    script:
        "../scripts/extract.py"
