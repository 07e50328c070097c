# The built-in zoo: one job trains every model of a zoo collection (batched) and writes
# Hugging Face-style model folders (and a LoRA zoo's base model) under results/{c}/zoo/.


rule zoo:
    output:
        directory("results/{c}/zoo"),
    params:
        spec=lambda w: zoo_spec(w.c),
        data_seed=config["data_seed"],
        code=code_version("zoo", "io"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    log:
        "logs/{c}/zoo.log",
    conda:
        ENV
    script:
        "../scripts/zoo.py"
