"""The collection table: one row per model, the lock that every later stage reads.

Columns: ``key`` (the ``{model}`` wildcard: a slug that cannot hold '/' or '..'), ``id``,
``source``, ``revision`` (40 hex characters; empty for a Hub repo that could not be resolved),
``format`` (full / lora), ``task``, ``split`` (basis / heldout), ``path`` (the model folder,
for zoo and local sources) and ``note`` (why a model could not be resolved).

The table is written atomically, its rows are never reordered and new models are appended,
so that a rerun sees the same DAG plus the new models. The split of a model is a pure
function of its key and the split config (a hash threshold or an explicit list), so adding
models never moves an existing model between basis and held-out. Beside it,
``revisions/<key>`` holds each local or Hub model's revision (``write_stamps``): the input of
its fetch job, touched only when the model changes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported by the functions that make tables: fetch needs none
    import pandas as pd

from . import layers
from .io import atomic_path, write_table

COLUMNS = ["key", "id", "source", "revision", "format", "task", "split", "path", "note"]
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
log = logging.getLogger("weightspace")


def slugify(model_id: str) -> str:
    """A model id as a safe key: 'org/name' → 'org--name'; anything else odd → '_'."""
    key = re.sub(r"[^A-Za-z0-9_.\-]", "_", model_id.replace("/", "--"))
    key = re.sub(r"\.{2,}", "_", key).strip("._-")
    if not key or ".." in key or not _KEY.match(key):
        raise ValueError(f"model id {model_id!r} gives no safe key")
    return key


def unnamed_key(model_id: str) -> str:
    """The key of a model whose id gives no safe key (``slugify`` refuses it): ``unnamed-`` and
    8 hex digits of the id's SHA-1, so that its row, and its rejection, still have a name."""
    return "unnamed-" + hashlib.sha1(model_id.encode("utf-8", "surrogateescape")).hexdigest()[:8]


def _sha40(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _u(key: str, split: dict) -> float:
    digest = hashlib.sha256(f"{split.get('seed', 0)}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, split: dict) -> str:
    """'heldout' if the key is listed in ``split['heldout']`` or, without a list, if its hash
    u(key, seed) ∈ [0, 1) falls below ``split['heldout_fraction']``; else 'basis'."""
    if split.get("heldout"):
        return "heldout" if key in split["heldout"] else "basis"
    return "heldout" if _u(key, split) < split.get("heldout_fraction", 0.0) else "basis"


def splits(keys: list[str], split: dict) -> list[str]:
    """``split_of`` for every key; with a held-out fraction that the hash gave no model (a small
    collection), the key of smallest u is held out when at least three models remain as basis
    plus one, so that every number still has its held-out counterpart; with fewer models a
    warning says there is none."""
    out = [split_of(k, split) for k in keys]
    if not split.get("heldout") and split.get("heldout_fraction", 0.0) > 0 and "heldout" not in out:
        if len(keys) >= 3:
            out[min(range(len(keys)), key=lambda i: _u(keys[i], split))] = "heldout"
        else:
            print(f"weightspace: warning: {len(keys)} models are too few for a held-out model "
                  "(at least 3 are needed); every number is on basis models only", file=sys.stderr)
    return out


def resolve_zoo(name: str, spec: dict, zoo_dir: str) -> pd.DataFrame:
    """Rows of a zoo collection: known from its config alone (training is deterministic)."""
    import pandas as pd

    from . import zoospec

    rev = _sha40({k: v for k, v in spec.items()})
    fmt = "lora" if spec["kind"] in zoospec.ADAPTER_KINDS else "full"
    rows = [{"key": key, "id": f"zoo/{name}/{key}", "source": "zoo", "revision": rev,
             "format": fmt, "task": task["label"], "path": f"{zoo_dir}/{key}", "note": ""}
            for key, task in zip(zoospec.model_keys(spec), zoospec.zoo_tasks(spec))]
    return pd.DataFrame(rows)


MAX_DEPTH = 4  # model folders are looked for this deep (a trainer's run/checkpoint-500/)


def model_folders(root: Path, depth: int = MAX_DEPTH) -> list[Path]:
    """The model folders under ``root`` at any depth up to ``depth``: a folder with safetensors or
    pickle checkpoints is one (not looked into further); a folder with neither is looked into,
    and is listed itself (JSON only: to be rejected by name) when nothing below it is a model.
    Hidden folders (.git, .cache) are not looked into; an unreadable folder is listed (rejected)."""
    found = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            names = [p for p in sub.iterdir()]
        except OSError:
            found.append(sub)
            continue
        if any(p.suffix == ".safetensors" or p.suffix in layers.PICKLE_SUFFIXES for p in names):
            found.append(sub)
            continue
        deeper = model_folders(sub, depth - 1) if depth > 1 else []
        found += deeper or ([sub] if any(p.suffix == ".json" for p in names) else [])
    return found


def file_digest(path: Path, cache: dict | None = None) -> str:
    """The sha256 of a file's bytes. ``cache`` maps a file's absolute path to [size, mtime_ns,
    inode, sha256]: a file whose size, modification time and inode are those recorded is not
    read again (a file written in place, copied or moved is)."""
    st = path.stat()
    key, stamp = str(path.absolute()), [st.st_size, st.st_mtime_ns, st.st_ino]
    if cache is not None and cache.get(key, [None])[:3] == stamp:
        return cache[key][3]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    if cache is not None:
        cache[key] = [*stamp, h.hexdigest()]
    return h.hexdigest()


def _local_row(sub: Path, model_id: str, digests: dict | None = None) -> dict | None:
    """The row of one model folder (None: not a model folder: no safetensors, pickle or JSON).
    Its revision is a digest of its files' names, sizes and contents (``file_digest``), so it
    changes exactly when the model does: not when its folder is moved or copied."""
    key = slugify(model_id)
    files = sorted(f for f in list(sub.glob("*.safetensors")) + list(sub.glob("*.json")) if not f.is_dir())
    pickles = [p for p in sub.iterdir() if p.suffix in layers.PICKLE_SUFFIXES]
    if not any(f.suffix == ".safetensors" for f in files):
        if pickles:  # listed, so that fetch rejects it by name (never unpickled, nor read)
            stamp = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(pickles)]
            return {"key": key, "id": model_id, "source": "local", "revision": _sha40(stamp),
                    "format": layers.model_format(sub), "task": "", "path": str(sub), "note": ""}
        if files:
            raise layers.ModelFormatError(f"no safetensors weights (only {[f.name for f in files][:3]})")
        return None
    stamp = [(f.name, f.stat().st_size, file_digest(f, digests)) for f in files]
    cfg = layers.read_json(sub, "config.json") or layers.read_json(sub, "adapter_config.json") or {}
    task = (cfg.get("weightspace_task") or {}).get("label", "")
    return {"key": key, "id": model_id, "source": "local", "revision": _sha40(stamp),
            "format": layers.model_format(sub), "task": task, "path": str(sub), "note": ""}


def resolve_local(name: str, folder: str, digests: dict | None = None) -> pd.DataFrame:
    """Rows of a local collection: one per model folder at any depth (``model_folders``: a folder
    with safetensors; one with only pickle checkpoints or only JSON files is listed too, for
    fetch to reject by name; the id of a deeper one is its path, ``run/checkpoint-500``). Nothing read
    here can stop the collection: a folder whose files cannot be read (a dangling link, a
    config.json that is no JSON) or whose name gives no safe key becomes a row with an empty
    revision and the problem in ``note``, which its fetch turns into a rejection. ``digests``:
    the cache of ``file_digest`` (updated in place)."""
    import pandas as pd

    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"collection {name}: local path {folder} is not a folder")
    rows = []
    for sub in model_folders(root):
        model_id = sub.relative_to(root).as_posix()  # a folder's name; run/checkpoint-500 deeper down
        try:
            row = _local_row(sub, model_id, digests)
        except Exception as exc:  # any failure to read one folder rejects that model only
            try:
                key = slugify(model_id)
            except ValueError:
                key = unnamed_key(model_id)
            why = str(exc) if isinstance(exc, (layers.ModelFormatError, ValueError)) else f"{type(exc).__name__}: {exc}"
            row = {"key": key, "id": model_id, "source": "local", "revision": "", "format": "", "task": "",
                   "path": str(sub), "note": f"model {model_id}: {why}"}
        if row is not None:
            rows.append(row)
    if not rows:
        raise ValueError(f"collection {name}: no model folders (safetensors or pickle checkpoints) in {folder}")
    return pd.DataFrame(rows)


SHEET = "models.tsv"  # a local collection's models sheet, in its folder (config/models.schema.yaml)


def read_sheet(path: str | os.PathLike, collection: str = "?") -> pd.DataFrame:
    """A collection's models sheet (model, task, split; config/models.schema.yaml), each row
    checked against its schema; every mistake is one line naming the row and the model, with the
    nearest known column for an unknown one. Empty cells are empty strings."""
    import difflib

    import jsonschema
    import yaml

    found = Path(__file__).resolve().parents[2] / "config" / "models.schema.yaml"
    schema = yaml.safe_load(found.read_text()) if found.exists() else SHEET_SCHEMA
    try:
        sheet = read_table(path)
    except Exception as exc:
        raise ValueError(f"collection {collection}: {path}: cannot be read as a tab-separated sheet ({exc})") from None
    known = list(schema["properties"])
    lines = [f"collection {collection}: {path}: unknown column {c!r}"
             + (f" (did you mean {near[0]!r}?)" if (near := difflib.get_close_matches(c, known, n=1)) else
                f" (known: {', '.join(known)})") for c in sheet.columns if c not in known]
    if "model" not in sheet.columns:
        lines.append(f"collection {collection}: {path}: no 'model' column (the models' ids)")
    if not lines:
        validator = jsonschema.Draft202012Validator(schema)
        for i, row in enumerate(sheet.to_dict("records"), start=2):  # line 1 is the header
            for err in validator.iter_errors(row):
                where = ".".join(map(str, err.absolute_path)) or "row"
                lines.append(f"collection {collection}: {path}: line {i} (model {row.get('model')!r}): {where}: "
                             f"{err.message}")
        dup = sorted(set(sheet["model"][sheet["model"].duplicated()]))
        if dup:
            lines.append(f"collection {collection}: {path}: models listed twice: {dup[:5]}")
    if lines:
        raise ValueError("\n".join(lines))
    for col in ("task", "split"):
        if col not in sheet:
            sheet[col] = ""
    return sheet


SHEET_SCHEMA = {"type": "object", "required": ["model"], "additionalProperties": False,  # for a package install
                "properties": {"model": {"type": "string", "minLength": 1}, "task": {"type": "string"},
                               "split": {"enum": ["basis", "heldout", ""]}}}


def read_table(path: str | os.PathLike) -> pd.DataFrame:
    import pandas as pd

    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def update_lock(path: str | os.PathLike, resolved: pd.DataFrame, split: dict, write: bool = True,
                busy: bool = False, sheet: pd.DataFrame | None = None) -> pd.DataFrame:
    """Merge freshly resolved rows into the lock at ``path`` and return the table.

    Existing rows keep their order and pinned revision (Hub, zoo); a local model's row follows its
    folder: its revision (a digest of its files' names, sizes and contents) and path are the
    fresh ones, so a model overwritten in place is fetched and everything after it recomputed,
    while a folder moved or copied elsewhere keeps its revision; a model whose folder is gone
    keeps its row with an empty revision and the reason in ``note`` (a warning now, a rejection
    by its fetch: it leaves the basis and the tables, and rejected.tsv names it); a row that
    could not be resolved (empty revision) takes the fresh one (the folder may be fixed or back);
    rows of new keys are appended; the split column follows the split config. The file is
    rewritten (atomically) only when its content changes, so an unchanged rerun does not touch
    it; so are the rows' revision stamps (``write_stamps``); neither with ``write`` False (a dry
    run: the table is returned, nothing is written). With ``busy`` (another run holds the
    working directory) a table that would change is refused: that run reads it. A models
    ``sheet`` (``read_sheet``) sets the task and split of the models it lists (a model it names
    that the collection does not have is refused, named).
    """
    import pandas as pd

    dup = resolved["key"][resolved["key"].duplicated()].tolist()
    if dup:
        clash = resolved[resolved["key"] == dup[0]]["id"].tolist()
        raise ValueError(f"models {clash} map to the same key {dup[0]!r} (file names are slugs of ids); "
                         "rename one of them")
    path = Path(path)
    if path.exists():
        table = read_table(path)
        fresh = resolved.set_index("key")
        local = table["source"].eq("local")
        gone = local & ~table["key"].isin(fresh.index) & table["revision"].ne("")
        for i in table.index[gone]:
            r = table.loc[i]
            note = (f"model {r.id}: its folder {r.path} is gone: left out of the basis and of every table "
                    "from this run on (put it back to bring it in again)")
            log.warning("collection %s: %s", path.parent.name, note)
            table.loc[i, ["revision", "note"]] = ["", note]  # fetch rejects it: rejected.tsv and the report say so
        # a local model's row follows its folder (content stamp, place); an unresolved row is re-read
        follow = (table["source"].eq("local") | table["revision"].eq("")) & table["key"].isin(fresh.index)
        for col in ("id", "revision", "format", "task", "path", "note"):
            if col in fresh:
                table.loc[follow, col] = fresh.loc[table.loc[follow, "key"], col].fillna("").astype(str).to_numpy()
        new = resolved[~resolved["key"].isin(table["key"])]
        table = pd.concat([table, new], ignore_index=True)
    else:
        table = resolved.copy()
    table["split"] = splits(list(table["key"]), split)
    if sheet is not None and len(sheet):
        unknown = sorted(set(sheet["model"]) - set(table["id"]))
        if unknown:
            raise ValueError(f"{path.parent.name}: the models sheet lists {unknown[:5]}, which the collection does "
                             f"not have (ids are {list(table['id'][:3])}, …)")
        by_id = sheet.set_index("model")
        for col in ("task", "split"):
            given = table["id"].map(by_id[col]).fillna("")
            table.loc[given != "", col] = given[given != ""]
    for col in COLUMNS:
        if col not in table:
            table[col] = ""
    table = table[COLUMNS].fillna("").astype(str)
    if table["split"].eq("basis").sum() < 2:
        raise ValueError(f"{path}: fewer than two basis models; check the split config")
    if write and (not path.exists() or not read_table(path).equals(table)):
        if busy:
            raise RuntimeError(f"{path} would change (new models or another split) while another run holds "
                               "this directory (.snakemake/locks): wait for it to end, or run "
                               "`snakemake --unlock` if it was killed")
        write_table(table, path)
    if write:
        write_stamps(table, path.parent / "revisions")
    return table


def write_stamps(table: pd.DataFrame, folder: str | os.PathLike) -> None:
    """One small file per local or Hub model, ``folder/<key>``, holding its revision, task and note:
    the input of its fetch job. It is rewritten only when they change, so its modification time
    says when the model did (a moved folder changes the lock's path column, not the stamp: the
    jobs read the path from the lock and rerun only for a new revision)."""
    folder = Path(folder)
    for r in table[table["source"] != "zoo"].itertuples():
        stamp, text = folder / r.key, f"{r.revision}\n{r.task}\n{r.note}\n"
        if not stamp.exists() or stamp.read_text() != text:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(stamp) as tmp:
                tmp.write_text(text)


def placed(row: dict, lock: str | os.PathLike | pd.DataFrame) -> dict:
    """A job's row (its params leave the folder's place out, so that moving a collection reruns
    nothing) with the place the lock gives now."""
    table = lock if hasattr(lock, "set_index") else read_table(lock)
    return {**row, "path": table.set_index("key").loc[row["key"], "path"]}


def batches(table: pd.DataFrame, max_models: int, max_bytes: int = 1 << 30) -> list[list[str]]:
    """The keys of a local collection's models in lock order, cut into consecutive batches of at
    most ``max_models`` models and ``max_bytes`` of files (a larger model is a batch alone): one
    fetch+extract job per batch, so hundreds of small models cost a few job start-ups, not
    hundreds. Rows are only ever appended, so new models fill the last batch or start new ones and
    a finished batch keeps its models (a changed model reruns its own batch)."""
    out, size = [], 0
    for key, path in zip(table["key"], table["path"]):
        folder = Path(path)
        try:
            n = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) if folder.is_dir() else 0
        except OSError:
            n = 0
        if not out or len(out[-1]) >= max_models or size + n > max_bytes:
            out.append([])
            size = 0
        out[-1].append(key)
        size += n
    return out


def signature(manifest: dict) -> dict[str, tuple]:
    """The architecture a model is checked against: {tensor name: shape} of its weights
    (for an adapter, of its LoRA tensors)."""
    tensors = manifest.get("tensors") or {}
    if manifest.get("format") == "lora":
        tensors = {k: v for k, v in tensors.items() if ".lora_" in k}
    return {k: tuple(v[0]) for k, v in tensors.items()}


def dtype_mismatches(reference: dict, manifest: dict) -> list[tuple[str, str, str]]:
    """(tensor, its dtype, the reference's) where one is a float type and the other is not."""
    from .layers import FLOAT_DTYPES

    ref, own = reference.get("tensors") or {}, manifest.get("tensors") or {}
    return [(n, own[n][1], ref[n][1]) for n in sorted(set(ref) & set(own))
            if (ref[n][1] in FLOAT_DTYPES) != (own[n][1] in FLOAT_DTYPES)]


def screen(manifests: dict[str, dict], reference: str | None = None) -> pd.DataFrame:
    """Accept or reject every model: rejected at fetch, or of another architecture than the
    reference model (``reference`` key, else the most common architecture among the models).

    Returns one row per model: key, status (accepted / rejected), reason (names the model).
    """
    import pandas as pd

    fetched = {k: m for k, m in manifests.items() if m.get("status") == "ok"}
    sigs = {k: signature(m) for k, m in fetched.items()}
    if reference is None and sigs:
        from .layers import FLOAT_DTYPES

        def kind(k):  # the architecture with each tensor's kind (float or not): what most models share
            tensors = fetched[k].get("tensors") or {}
            return json.dumps(sorted((n, list(shape), tensors.get(n, [None, "F32"])[1] in FLOAT_DTYPES)
                                     for n, shape in sigs[k].items()))
        counts: dict[str, int] = {}
        for k in sigs:
            counts[kind(k)] = counts.get(kind(k), 0) + 1
        best = max(counts.values())
        reference = next(k for k in sigs if counts[kind(k)] == best)
    if reference is not None and reference not in sigs:
        raise ValueError(f"the reference model {reference} was not fetched: "
                         f"{manifests.get(reference, {}).get('reason', 'not in the collection')}")
    rows = []
    for key, man in manifests.items():
        if man.get("status") != "ok":
            rows.append({"key": key, "status": "rejected", "reason": man.get("reason", "fetch failed")})
            continue
        ref, sig = sigs[reference], sigs[key]
        if sig != ref:
            missing, extra = sorted(set(ref) - set(sig)), sorted(set(sig) - set(ref))
            shapes = sorted(n for n in set(ref) & set(sig) if ref[n] != sig[n])
            reason = (f"{man.get('id', key)}: architecture differs from reference {reference}: "
                      f"missing {missing[:3]}, extra {extra[:3]}, other shapes {shapes[:3]}")
            rows.append({"key": key, "status": "rejected", "reason": reason})
        elif not sig:
            rows.append({"key": key, "status": "rejected", "reason": f"{man.get('id', key)}: no weight tensors"})
        elif kinds := dtype_mismatches(fetched[reference], man):
            name, theirs, ours = kinds[0]
            rows.append({"key": key, "status": "rejected", "reason": (
                f"{man.get('id', key)}: tensor {name} is {theirs} where reference {reference} has {ours} "
                "(integer or quantized weights are not analysed)")})
        else:
            rows.append({"key": key, "status": "accepted", "reason": ""})
    return pd.DataFrame(rows, columns=["key", "status", "reason"])


class RejectedModels(ValueError):
    """Raised with ``strict: true`` when any model of a collection was rejected."""


def screen_step(manifest_paths: list[str], reference: str | None, strict: bool, screen_path: str,
                rejected_path: str, log) -> None:
    """The screen rule: every model's manifest screened (``screen``), the table and the
    rejected rows written, each rejection logged (``log``: a logger) with its reason; with
    ``strict`` a rejection stops the run (``enforce_strict``)."""
    mans = {}
    for path in manifest_paths:
        m = json.loads(Path(path).read_text())
        mans[m["key"]] = m
    table = screen(mans, reference)
    rejected = table[table["status"] == "rejected"]
    for r in rejected.itertuples():
        log.warning("rejected %s: %s", r.key, r.reason)
    log.info("%d of %d models accepted", len(table) - len(rejected), len(table))
    write_table(table, screen_path)
    write_table(rejected, rejected_path)
    if strict:
        enforce_strict(table)


def enforce_strict(screened: pd.DataFrame) -> None:
    """With ``strict: true`` a rejected model stops the run: raise naming every one of them."""
    rejected = screened[screened["status"] == "rejected"]
    if len(rejected):
        raise RejectedModels(f"strict: true and {len(rejected)} model(s) rejected:\n"
                             + "\n".join(f"  {r.key}: {r.reason}" for r in rejected.itertuples()))


def accepted_stores(store_paths: list[str], screen_path: str) -> list[str]:
    """The stores of accepted models only (``{key}.zarr`` paths), in their given order."""
    import pandas as pd

    table = pd.read_csv(screen_path, sep="\t", dtype=str, keep_default_na=False)
    ok = set(table.loc[table["status"] == "accepted", "key"])
    return [p for p in store_paths if Path(p).name.removesuffix(".zarr") in ok]
