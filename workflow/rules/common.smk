# Input functions and the collection tables, read at parse time like a sample sheet.
import os
import re
import sys
from pathlib import Path

from weightspace import zoo as _zoo
from weightspace.collection import read_table, resolve_local, resolve_zoo, update_lock


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


def zoo_spec(c):
    return _zoo.normalize_spec(config["collections"][c]["zoo"])


def text_zoo(c):
    """A realism zoo (PEFT LoRAs on the real MiniLM): it trains with 2 threads."""
    spec = config["collections"][c]
    return spec["source"] == "zoo" and spec["zoo"]["kind"] == "text-lora"


def _resolve(c):
    spec = config["collections"][c]
    if spec["source"] == "zoo":
        if "zoo" not in spec:
            raise ValueError(f"collection {c}: source 'zoo' needs a 'zoo:' section")
        return resolve_zoo(c, zoo_spec(c), f"results/{c}/zoo")
    if spec["source"] == "local":
        if "path" not in spec:
            raise ValueError(f"collection {c}: source 'local' needs 'path:'")
        table = resolve_local(c, spec["path"])
        if spec["evaluator"] == "zoo":
            others = [r.id for r in table.itertuples() if not _zoo.is_zoo_model(r.path)]
            if others:
                raise ValueError(
                    f"collection {c}: the zoo evaluator scores the built-in zoo's MLPs only, and "
                    f"{others[:3]} are not such models: set evaluator (none, text-classification, "
                    "image-classification, causal-lm)")
        return table
    if spec["source"] == "hub":
        return _resolve_hub(c, spec)
    raise ValueError(f"collection {c}: unknown source {spec['source']!r}")


def _resolve_hub(c, spec):
    """Ask the Hub only for what the lock does not have: new explicit ids, or the query when
    there is no lock yet or refresh is asked for. A rerun with a lock makes no request."""
    import pandas as pd
    from weightspace import hub

    if not spec.get("repos") and not spec.get("query"):
        raise ValueError(f"collection {c}: source 'hub' needs 'repos:' or 'query:'")
    for e in spec.get("repos", []):
        hub.check_repo_id(e if isinstance(e, str) else e["id"], c)
    lock = f"results/{c}/collection.tsv"
    known = set(read_table(lock)["id"]) if os.path.exists(lock) else set()
    frames = []
    new = [e for e in spec.get("repos", []) if (e if isinstance(e, str) else e["id"]) not in known]
    if new:
        frames.append(hub.resolve_repos(new))
    if spec.get("query") and (not known or spec["refresh"]):
        found = hub.resolve_query(spec["query"])
        frames.append(found[~found["id"].isin(known)])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["key"])


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
TABLES = {
    c: update_lock(f"results/{c}/collection.tsv", _resolve(c), config["collections"][c]["split"],
                   write=_may_write_at_parse_time(), busy=any(Path(".snakemake/locks").glob("*")))
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
        rotation_null=s["rotation_null"], sketch_when_cheaper=s["sketch_when_cheaper"])


def model_source(wildcards):
    """Fetch's input: the zoo's folder (one job trains all), the local model's folder, or
    nothing for a Hub model (it is downloaded by the job)."""
    c = wildcards.c
    source = config["collections"][c]["source"]
    if source == "zoo":
        return [f"results/{c}/zoo"]
    if source == "local":
        return [model_path(c, wildcards.model)]
    return []


def row(c, key):
    return {"key": key, **TABLES[c].set_index("key").loc[key].to_dict()}


def manifests(c):
    return [f"results/{c}/manifests/{k}.json" for k in keys(c)]


def model_path(c, key):
    row = TABLES[c].set_index("key").loc[key]
    return row["path"]


def base_folder(c):
    """The frozen base of an adapter collection (the evaluator needs it): the zoo's, or the
    one its evaluation section names."""
    spec = config["collections"][c]
    if spec["source"] == "zoo" and spec["zoo"]["kind"] in _zoo.BASE_KINDS:
        return f"results/{c}/zoo/base"
    return config["collections"][c]["evaluation"].get("base")


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


def check_stage_settings(c):
    """Refuse, when the config is read, adapt / merge settings that cannot work."""
    spec = config["collections"][c]
    for stage in ("adapt", "merge"):
        if stage in spec and stage_view(c, stage) not in views(c):
            raise ValueError(f"collection {c}: {stage}.view {stage_view(c, stage)!r} is not one of its views {views(c)}")
    if "adapt" in spec and spec["evaluator"] not in ("zoo", "text-classification"):
        raise ValueError(f"collection {c}: the adapt stage trains zoo MLPs and text classifiers; "
                         f"this collection's evaluator is {spec['evaluator']!r}")


def quality(c):
    """What a collection's figures show of the projected models, as named in their files:
    task accuracy (or the evaluator's metric) and error, or reconstruction error alone."""
    return "error" if config["collections"][c]["evaluator"] == "none" else "accuracy"


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
            if config["align"]["enabled"] and config["collections"][c]["evaluator"] != "none":
                out.append(f"results/{c}/figures/{v}/alignment_vs_weights.png")
        check_stage_settings(c)
        if "adapt" in config["collections"][c]:
            out.append(f"results/{c}/figures/{stage_view(c, 'adapt')}/adapt_accuracy_vs_trainable.png")
        if "merge" in config["collections"][c]:
            out.append(f"results/{c}/figures/{stage_view(c, 'merge')}/merge_normalised_accuracy.png")
        if "sweep" in config["collections"][c]:
            out += [f"results/{c}/figures/{v}/error_vs_basis_size.png" for v in views(c)]
    return out


if max(config["project"]["ks"]) > config["subspace"]["max_k"]:
    raise ValueError(
        f"project.ks goes up to {max(config['project']['ks'])} but subspace.max_k is "
        f"{config['subspace']['max_k']}: raise subspace.max_k or drop the larger k"
    )
