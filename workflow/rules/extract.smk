# fetch: one job per model: download a Hub model (safetensors + json, into the HF cache) or
# describe a zoo/local folder; writes a manifest (files, bytes, sha256, tensors) or a rejection.
# extract: one job per model, safetensors -> results/{c}/weights/{model}.zarr (one writer per
# store; source dtype kept, bf16 as uint16 bits; one tensor in memory at a time).
# fetch_extract_<c>: the same two steps for every model of a zoo collection in one job (one job
# trains them all; a job per model of a few KB would cost more in start-up than the work).
# fetch_extract_<c>_<i>: the same for batch i of a local collection's models (collection.batches:
# consecutive rows of the lock, so new models make new batches; each model's revision stamp is an
# input, so a changed model reruns its batch only).
# screen: every manifest against the reference architecture -> screen.tsv and rejected.tsv.


rule fetch:
    input:
        model_source,
    output:
        "results/{c}/manifests/{model}.json",
    wildcard_constraints:
        c=one_of(PER_MODEL),
    params:
        row=lambda w: job_row(w.c, w.model),
        lock=lambda w: f"results/{w.c}/collection.tsv",
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
    wildcard_constraints:
        c=one_of(PER_MODEL),
    params:
        row=lambda w: job_row(w.c, w.model),
        lock=lambda w: f"results/{w.c}/collection.tsv",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    log:
        "logs/{c}/extract/{model}.log",
    script:
        "../scripts/extract.py"


for _c in [c for c in config["collections"] if SOURCES[c].batched]:

    rule:
        name:
            f"fetch_extract_{_c}"
        input:
            SOURCES[_c].fetch_inputs(None),
        output:
            manifests=manifests(_c),
            stores=[directory(p) for p in stores(_c)],
        params:
            rows=[row(_c, k) for k in keys(_c)],
        threads: 1
        resources:
            mem_mb=1000,
            runtime=30,
        log:
            f"logs/{_c}/fetch_extract.log",
        script:
            "../scripts/fetch_extract.py"


for _c, _batches in BATCHES.items():
    for _i, _keys in enumerate(_batches):

        rule:
            name:
                f"fetch_extract_{_c}_{_i}"
            input:
                [s for k in _keys for s in SOURCES[_c].fetch_inputs(k)],
            output:
                manifests=[f"results/{_c}/manifests/{k}.json" for k in _keys],
                stores=[directory(f"results/{_c}/weights/{k}.zarr") for k in _keys],
            params:
                rows=[job_row(_c, k) for k in _keys],
                lock=f"results/{_c}/collection.tsv",
            threads: 1
            resources:
                mem_mb=1000,
                runtime=120,
            log:
                f"logs/{_c}/fetch_extract/{_i}.log",
            script:
                "../scripts/fetch_extract.py"
