# collect: results/{c}/collection.tsv is resolved at parse time (common.smk, TABLES), like a
# sample sheet, so the DAG is known up front and a rerun touches only new rows. It is written
# atomically, only when it changes; rows are never reordered and new models are appended.
# For zoo and local sources resolving is deterministic and offline, so no rule is needed;
# this rule copies the lock into a human-readable per-collection listing for the report.


rule collection_listing:
    input:
        lambda w: lock_file(w.c),
    output:
        report(
            "results/{c}/collection.csv",
            caption="../report/collection.rst",
            category="Collections",
            subcategory="{c}",
            labels={"collection": "{c}", "table": "models, revisions, splits"},
        ),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/{c}/collection_listing.log",
    script:
        "../scripts/collection_listing.py"
