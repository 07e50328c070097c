# export: every model compressed at the configured k, in its source format (full models as
# safetensors + config, adapters as PEFT folders whose lora_alpha makes PEFT add exactly the
# reconstructed ΔW), and one bundle per collection (shared basis + mean + coefficients).


rule export:
    input:
        stores=lambda w: stores(w.c),
        screen="results/{c}/screen.tsv",
        subspace=lambda w: subspace_groups(w.c, w.view),
        coefficients="results/{c}/project/{view}/coefficients.zarr",
    output:
        models=directory("results/{c}/export/{view}/k{k}"),
        sizes=report(
            "results/{c}/export/{view}/k{k}-sizes.csv",
            caption="../report/export_sizes.rst",
            category="4. Compression",
            subcategory="{c} [{view}]",
            labels={"collection": "{c}", "view": "{view}", "table": "export bytes at k={k}"},
        ),
    params:
        base=lambda w: base_folder(w.c),
        code=script_code("export.py"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "logs/{c}/export/{view}/k{k}.log",
    script:
        "../scripts/export.py"
