# The built-in zoo: one job trains every model of a zoo collection (batched) and writes
# Hugging Face-style model folders (and a LoRA zoo's base model) under results/{c}/zoo/.


rule zoo:
    output:
        directory("results/{c}/zoo"),
    params:
        spec=lambda w: zoo_spec(w.c),
        data_seed=config["data_seed"],
        code=script_code("zoo.py"),
    priority: 60  # every collection starts from its zoo: train them first
    threads: lambda w: 2 if text_zoo(w.c) else 1
    resources:
        mem_mb=lambda w: 4000 if text_zoo(w.c) else 2000,
        runtime=30,
    log:
        "logs/{c}/zoo.log",
    script:
        "../scripts/zoo.py"
