# transfer: one collection's subspace against another's models (transfer.pairs, ordered A → B):
# B's models projected onto A's subspace beside B's own, a random one and the means; the share
# of B's centred energy A's top-k directions capture against Haar-random subspaces; where the
# architectures differ, only the modes where they meet (input features, outputs, declared).


rule transfer:
    input:
        a=lambda w: subspace_groups(w.a, transfer_view(w.a)),
        b=lambda w: subspace_groups(w.b, transfer_view(w.b)),
        stores=lambda w: stores(w.b),
        screen="results/{b}/screen.tsv",
        zoo=lambda w: stage_inputs(w.b),
        evaluation_files=lambda w: evaluation_files(w.b),
    output:
        energy=report(
            "results/transfer/{a}~{b}/energy.csv",
            caption="../report/transfer.rst",
            category="6. Transfer",
            subcategory="{a} → {b}",
            labels={"pair": "{a} → {b}", "table": "captured energy per matrix and mode"},
        ),
        projection="results/transfer/{a}~{b}/projection.parquet",
        summary="results/transfer/{a}~{b}/summary.csv",
        figure=report(
            "results/transfer/{a}~{b}/transfer.png",
            caption="../report/transfer.rst",
            category="6. Transfer",
            subcategory="{a} → {b}",
            labels={"pair": "{a} → {b}", "figure": "B's models on A's subspace"},
        ),
    wildcard_constraints:
        a=r"[A-Za-z0-9][A-Za-z0-9_.\-]*?",
        b=r"[A-Za-z0-9][A-Za-z0-9_.\-]*",
    params:
        settings=config["transfer"],
        matches=lambda w: transfer_matches(w.a, w.b),
        view=lambda w: transfer_view(w.b),
        ks=config["project"]["ks"],
        k=config["report"]["k"],
        fdr=config["report"]["fdr"],
        margin=config["report"]["margin"],
        share=config["report"]["shared_share"],
        splits=lambda w: splits(w.b),
        evaluator=lambda w: config["collections"][w.b]["evaluator"],
        base=lambda w: base_folder(w.b),
        evaluation=lambda w: evaluation(w.b),
        data_seed=config["data_seed"],
        seed=config["evaluate"]["seed"],
        code=script_code("transfer.py"),
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    log:
        "logs/transfer/{a}~{b}.log",
    script:
        "../scripts/transfer.py"


rule transfer_matrix:
    input:
        summaries=lambda w: [f"results/transfer/{a}~{b}/summary.csv" for a, b, _ in transfer_pairs()],
    output:
        summary=report(
            "results/transfer/summary.csv",
            caption="../report/transfer_matrix.rst",
            category="6. Transfer",
            subcategory="all pairs",
            labels={"table": "transfer verdict per pair"},
        ),
        figure=report(
            "results/figures/transfer_matrix.png",
            caption="../report/transfer_matrix.rst",
            category="6. Transfer",
            subcategory="all pairs",
            labels={"figure": "transfer matrix"},
        ),
    params:
        code=script_code("transfer_matrix.py"),
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    log:
        "logs/transfer/matrix.log",
    script:
        "../scripts/transfer_matrix.py"
