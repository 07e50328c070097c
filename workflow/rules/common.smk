# Input functions and the collection tables, read at parse time like a sample sheet.
import os
import re
import sys
from pathlib import Path

from weightspace.collection import batches, read_table, update_lock
from weightspace.sources import source_for


wildcard_constraints:
    c=r"[A-Za-z0-9][A-Za-z0-9_.\-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_.\-]*",
    view=r"full|factors|delta",
    g=r"\d+",
    k=r"\d+",


def script_code(script):
    """The code version of a step (weightspace.codehash): the hash of every library module its
    script imports, directly or through other modules. Given as a param, an edit to any of them
    reruns the step: Snakemake tracks the scripts itself, not the library they call. Compute
    steps carry it; fetch and extract do not (a code edit must not re-download a collection:
    their output format is versioned by weightspace.store.FORMAT instead)."""
    from weightspace.codehash import script_version

    return script_version(Path(workflow.basedir) / "workflow" / "scripts" / script)


for _spec in config["collections"].values():  # the zoo's models have their evaluator; your own: none until set
    _spec.setdefault("evaluator", "zoo" if _spec["source"] == "zoo" else "none")

SOURCES = {c: source_for(c, spec, f"results/{c}/collection.tsv") for c, spec in config["collections"].items()}


def zoo_spec(c):
    """A zoo collection's spec, defaults filled in."""
    return SOURCES[c].spec


def text_zoo(c):
    """A realism zoo (PEFT LoRAs on the real MiniLM): it trains with 2 threads."""
    return SOURCES[c].trains_text


def _may_write_at_parse_time():
    """Nothing is written while the workflow is only looked at (a dry run, lint, a list of rules;
    Snakemake's ``workflow.dryrun`` is not known yet when this file is read, so the command
    line decides)."""
    looking = ("--dry-run", "--dryrun", "--lint", "--list-rules", "--list", "--summary", "--detailed-summary",
               "--dag", "--rulegraph", "--filegraph", "--d3dag", "--list-changes", "--lc", "--report", "--unlock")
    args = sys.argv[1:]
    return not any(a in looking or a.split("=")[0] in looking or re.fullmatch(r"-[A-Za-z]*n[A-Za-z]*", a)
                   for a in args)


def lock_file(c):
    """The lock, as an input of rules (written when this file is read, so always there in a real run;
    absent only in a dry run of a new collection, which writes nothing and plans without it)."""
    path = f"results/{c}/collection.tsv"
    return path if os.path.exists(path) else []


# The lock: results/{c}/collection.tsv (rows appended, never reordered; see collect.smk).
_WRITE = _may_write_at_parse_time()
TABLES = {
    c: update_lock(f"results/{c}/collection.tsv", SOURCES[c].resolve(write=_WRITE), config["collections"][c]["split"],
                   write=_WRITE, busy=any(Path(".snakemake/locks").glob("*")), sheet=SOURCES[c].sheet())
    for c in config["collections"]
}


def table(c):
    return TABLES[c]


def keys(c, split=None):
    t = TABLES[c]
    return list(t["key"] if split is None else t.loc[t["split"] == split, "key"])


def splits(c):
    return dict(zip(TABLES[c]["key"], TABLES[c]["split"]))


def collection_format(c):
    formats = set(TABLES[c]["format"]) - {""}
    if len(formats) != 1:
        raise ValueError(f"collection {c} mixes model formats {sorted(formats)}")
    return formats.pop()


def views(c):
    if collection_format(c) == "lora":
        return list(config["collections"][c]["views"])
    return ["full"]


def stores(c, split=None):
    return [f"results/{c}/weights/{k}.zarr" for k in keys(c, split)]


def subspace_groups(c, view):
    n = config["subspace"]["layer_groups"]
    return [f"results/{c}/subspace/{view}/group-{g}.zarr" for g in range(n)]


def subspace_mem_mb(wildcards, input, attempt):
    """Memory of a subspace job from the Gram sizes it will allocate (weightspace.subspace.
    memory_estimate_mb), doubled on each retry; subspace.mem_mb until the stores exist."""
    from weightspace.subspace import memory_estimate_mb

    s = config["subspace"]
    if not input.stores or not os.path.exists(input.stores[0]):
        return s["mem_mb"] * attempt
    return attempt * memory_estimate_mb(
        input.stores[0], wildcards.view, s["layer_groups"], int(wildcards.g), len(input.stores),
        max_k=s["max_k"], exact_max_dim=s["exact_max_dim"], gaussian_null=s["gaussian_null"],
        rotation_null=s["rotation_null"], sketch_when_cheaper=s["sketch_when_cheaper"],
        gram_sketch_width=s["gram_sketch_width"] if s["model_gram"] == "sketch" else 0,
        null_draws=s["null_draws"])


# fetch and extract: a job per model (Hub, or batch 1), a job per batch of a local collection's
# models (collection.batches), or one job for a whole zoo collection
PER_MODEL = [c for c in config["collections"] if not SOURCES[c].batched and SOURCES[c].batch == 1]
BATCHES = {c: batches(TABLES[c], SOURCES[c].batch) for c in config["collections"]
           if not SOURCES[c].batched and SOURCES[c].batch > 1}


def one_of(names):
    """A wildcard pattern matching exactly these names (nothing when there are none)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


SMALL_WORK_MB = 256


def job_threads(setting, c, paths=(), share=1.0):
    """Threads of a subspace or align job: ``setting`` when a number; ``auto``: 1 for small
    work (a zoo collection, or the job's ``share`` of its input stores under SMALL_WORK_MB: a
    subspace group reads 1/layer_groups of each store), where a second thread gains little and
    keeps a second job, and its start-up, from running beside it; else 2."""
    if setting != "auto":
        return setting
    if SOURCES[c].batched:  # the built-in zoo: models of a few KB to a few MB
        return 1
    if paths and all(os.path.exists(p) for p in paths):
        size = sum(f.stat().st_size for p in paths for f in Path(p).rglob("*") if f.is_file())
        return 1 if size * share < SMALL_WORK_MB * 2**20 else 2
    return 2


def subspace_threads(wildcards, input):
    s = config["subspace"]
    return job_threads(s["threads"], wildcards.c, input.stores, 1 / s["layer_groups"])


def model_source(wildcards):
    """Fetch's input: what the collection's source says the model's fetch job reads."""
    return SOURCES[wildcards.c].fetch_inputs(wildcards.model)


def stage_inputs(c):
    """What the scoring stages need besides the stores (a zoo's folder: its base and data)."""
    return SOURCES[c].stage_inputs()


def row(c, key):
    return {"key": key, **TABLES[c].set_index("key").loc[key].to_dict()}


def job_row(c, key):
    """A per-model job's params: its row without the folder's place (the job reads that from the
    lock, ``collection.placed``), so that moving a collection's folder reruns nothing."""
    return {k: v for k, v in row(c, key).items() if k != "path"}


def task_map(c):
    """{model key: task} (params of the jobs that label models by task: a change reruns them)."""
    return dict(zip(TABLES[c]["key"], TABLES[c]["task"]))


def manifests(c):
    return [f"results/{c}/manifests/{k}.json" for k in keys(c)]


def base_folder(c):
    """The frozen base of an adapter collection (the evaluator needs it): the zoo's, or the
    one its evaluation section names."""
    return SOURCES[c].base_folder(config["collections"][c]["evaluation"])


def align_k():
    """k of the projected models the align stage compares (default: the report's k)."""
    return config["align"].get("k") or config["report"]["k"]


def evaluation(c):
    """The evaluator's settings, with a text zoo's own evaluation examples as the default data."""
    spec = config["collections"][c]
    out = dict(spec["evaluation"])
    if text_zoo(c):
        out.setdefault("data", f"results/{c}/zoo/eval.parquet")
        out.setdefault("validation", f"results/{c}/zoo/val.parquet")
    return out


def evaluation_files(c, probe=False):
    """The user's files the evaluator reads (evaluation data, validation data, base, tokenizer,
    processor folders; with ``probe``, the align probe file): rule inputs, so that a missing one
    fails at ``-n`` and editing one reruns what depends on it. A datasets split (a dict) is not
    a file; the text zoo's own files live inside its zoo folder, an input already."""
    spec = config["collections"][c]["evaluation"]
    values = [spec.get(key) for key in ("data", "validation", "base", "tokenizer", "processor")]
    if probe:
        values.append(config["align"].get("probe"))
    data = spec.get("data")
    if isinstance(data, dict) and isinstance(data.get("data_files"), (str, list)):
        values += [data["data_files"]] if isinstance(data["data_files"], str) else data["data_files"]
    return sorted({v for v in values if isinstance(v, str) and v})


def stage_view(c, stage):
    """The view the adapt / merge stage of collection c works on (delta for adapters)."""
    return config["collections"][c][stage].get("view") or ("delta" if collection_format(c) == "lora" else "full")


def merge_settings(c):
    s = dict(config["collections"][c]["merge"])
    s.setdefault("k", config["subspace"]["max_k"])
    s.setdefault("models", None)
    s.setdefault("head", None)
    return s


def collection_families(c):
    """The task families a zoo collection's own models were trained on (adapt marks new tasks
    of other families as outside them); none known for other sources."""
    from weightspace.zoospec import task_family

    spec = getattr(SOURCES[c], "spec", None)
    return sorted({task_family(t) for t in spec["tasks"]}) if spec else []


def zoo_dataset(c):
    """(data set, folder or None) a zoo collection's models train on (digits for other sources)."""
    spec = getattr(SOURCES[c], "spec", None) or {}
    return [spec.get("dataset", "digits"), spec.get("data_path")]


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "spiece.model")


def check_tokenizer(c):
    """A text evaluator needs a tokenizer: evaluation.tokenizer, else the base folder, else (a local
    collection) the first model folder holding tokenizer files, which is then used; refused when
    the config is read if there is none (it would fail minutes later in evaluate, asking the Hub
    for a tokenizer named None)."""
    spec = config["collections"][c]
    ev = spec["evaluation"]
    if spec["evaluator"] not in ("text-classification", "causal-lm") or ev.get("tokenizer") or base_folder(c):
        return
    for path in TABLES[c]["path"]:
        if path and any(os.path.exists(os.path.join(path, f)) for f in TOKENIZER_FILES):
            ev["tokenizer"] = path
            return
    raise ValueError(f"collection {c}: evaluator {spec['evaluator']} needs a tokenizer and none is given: set "
                     "evaluation.tokenizer (a folder with the tokenizer's files) or evaluation.base, or keep "
                     f"the tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, …) in the model folders")


def check_tasks(c):
    """A text or causal-lm evaluator whose data has a task column, in a collection where no model
    has a task (no models sheet, no weightspace_task): every model is scored on every row. Said
    once, when the config is read."""
    import pandas as pd

    spec = config["collections"][c]
    data = evaluation(c).get("data")
    if (spec["evaluator"] not in ("text-classification", "causal-lm") or not isinstance(data, str)
            or not os.path.exists(data) or TABLES[c]["task"].ne("").any()):
        return
    suffix = Path(data).suffix
    columns = (pd.read_parquet(data).columns if suffix == ".parquet" else pd.read_csv(data, nrows=0).columns
               if suffix == ".csv" else pd.read_json(data, lines=suffix == ".jsonl").columns)
    if "task" in columns:
        print(f"weightspace: collection {c}: the evaluation data {data} has a task column but no model has a task "
              "(a models sheet's task column, or weightspace_task in config.json): every model is scored on every "
              "row", file=sys.stderr)


for _c in config["collections"]:  # when the config is read, whatever the targets
    check_tokenizer(_c)
    check_tasks(_c)


def check_stage_settings(c):
    """Refuse, when the config is read, adapt / merge settings that cannot work."""
    spec = config["collections"][c]
    for stage in ("adapt", "merge"):
        if stage in spec and stage_view(c, stage) not in views(c):
            raise ValueError(f"collection {c}: {stage}.view {stage_view(c, stage)!r} is not one of its views {views(c)}")
    if "adapt" in spec and spec["evaluator"] not in ("zoo", "text-classification"):
        raise ValueError(f"collection {c}: the adapt stage trains zoo MLPs and text classifiers; "
                         f"this collection's evaluator is {spec['evaluator']!r}")


def across_pairs():
    """align.across as path tokens ("c" or "c@base" for "c:base"), each member checked: a
    collection of this config, aligned (align on, an evaluator), ':base' only with a base."""
    out = []
    for pair in config["align"]["across"]:
        for member in pair:
            c = member.removesuffix(":base")
            if c not in config["collections"]:
                raise ValueError(f"align.across {pair}: {c!r} is not a collection of this config")
            if not aligned(c):
                raise ValueError(f"align.across {pair}: collection {c} has no representations "
                                 "(align.enabled or the collection's align false, or evaluator none)")
            if member.endswith(":base") and collection_format(c) != "lora" and not base_folder(c):
                raise ValueError(f"align.across {pair}: collection {c} has no base model for ':base'")
        out.append(tuple(m.replace(":base", "@base") for m in pair))
    return out


def across_features(token):
    """The features a cross-collection member reads: its collection's first view (the original
    models are the same in every view)."""
    c = token.removesuffix("@base")
    return f"results/{c}/align/{views(c)[0]}/features.zarr"


def serving_labels():
    """(collection, view, k) of every bank the run builds (export.ks of every view)."""
    return [(c, v, k) for c in config["collections"] for v in views(c) for k in config["export"]["ks"]]


def serving_tables():
    return [f"results/{c}/bank/{v}/k{k}-serving.csv" for c, v, k in serving_labels()]


def quality(c):
    """What a collection's figures show of the projected models, as named in their files:
    task accuracy (or the evaluator's metric) and error, or reconstruction error alone."""
    return "error" if config["collections"][c]["evaluator"] == "none" else "accuracy"


def aligned(c):
    """Whether collection c's models go through the align stage."""
    spec = config["collections"][c]
    return config["align"]["enabled"] and spec.get("align", True) and spec["evaluator"] != "none"


def transfer_view(c):
    """The view a transfer pair compares: the adapters' delta (what they do to the model), else full."""
    return "delta" if collection_format(c) == "lora" and "delta" in views(c) else views(c)[0]


def transfer_pairs():
    """transfer.pairs as (A, B, matches) triples, each member checked; a pair's two collections
    must be compared in one view (both full models, or both adapter deltas)."""
    out = []
    for pair in config["transfer"]["pairs"]:
        a, b = pair[0], pair[1]
        for c in (a, b):
            if c not in config["collections"]:
                raise ValueError(f"transfer.pairs {pair}: {c!r} is not a collection of this config")
        if a == b:
            raise ValueError(f"transfer.pairs {pair}: a collection against itself is its own projection (evaluate)")
        if transfer_view(a) != transfer_view(b):
            raise ValueError(f"transfer.pairs {pair}: {a} is compared in view {transfer_view(a)}, {b} in "
                             f"{transfer_view(b)}: a pair needs one view")
        out.append((a, b, pair[2] if len(pair) > 2 else []))
    return out


def transfer_matches(a, b):
    return next(m for x, y, m in transfer_pairs() if (x, y) == (a, b))


def all_outputs():
    out = ["results/figures/overview_sharing.png", "results/summary.csv"]
    for c in config["collections"]:
        for v in views(c):
            out += [
                f"results/{c}/figures/{v}/spectra_vs_nulls.png",
                f"results/{c}/figures/{v}/{quality(c)}_vs_k.png",
                f"results/{c}/figures/{v}/{quality(c)}_vs_bytes.png",
            ]
            out += [f"results/{c}/export/{v}/k{k}" for k in config["export"]["ks"]]
            out += [f"results/{c}/bank/{v}/k{k}" for k in config["export"]["ks"]]  # (their serving tables: overview)
            if aligned(c):
                out.append(f"results/{c}/figures/{v}/alignment_vs_weights.png")
        check_stage_settings(c)
        if "adapt" in config["collections"][c]:
            out.append(f"results/{c}/figures/{stage_view(c, 'adapt')}/adapt_accuracy_vs_trainable.png")
        if "merge" in config["collections"][c]:
            out.append(f"results/{c}/figures/{stage_view(c, 'merge')}/merge_normalised_accuracy.png")
        if "sweep" in config["collections"][c]:
            out += [f"results/{c}/figures/{v}/error_vs_basis_size.png" for v in views(c)]
    out += [f"results/across/{a}~{b}/alignment_heatmap.png" for a, b in across_pairs()]
    if transfer_pairs():
        out += ["results/figures/transfer_matrix.png"]
        out += [f"results/transfer/{a}~{b}/transfer.png" for a, b, _ in transfer_pairs()]
    return out


if max(config["project"]["ks"]) > config["subspace"]["max_k"]:
    raise ValueError(
        f"project.ks goes up to {max(config['project']['ks'])} but subspace.max_k is "
        f"{config['subspace']['max_k']}: raise subspace.max_k or drop the larger k"
    )
