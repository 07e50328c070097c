"""Where a collection's models come from, behind one interface: the built-in zoo, a local
folder of model folders, or the Hugging Face Hub.

``source_for(name, spec, lock)`` gives the collection's source (``spec``: its config section,
``lock``: the path of its lock table) with

- ``resolve(write)``: the models as lock rows (key, id, revision, path, task, format), asking
  only for what the lock does not hold yet (a Hub collection with a lock makes no request);
  ``write`` False (a dry run) writes no cache;
- ``fetch_inputs(key)``: what the fetch job of a model reads: the zoo's folder (one job trains
  them all), else the model's revision stamp (``collection.write_stamps``), which changes when
  the model does;
- ``stage_inputs()``: what the stages that score models need besides the stores (the zoo's
  folder: its base and data);
- ``base_folder(evaluation)``: the frozen base of an adapter collection (the zoo's own, else
  the one the evaluation section names), or None.

The workflow (``workflow/rules/common.smk``) asks these and never branches on the source.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import zoospec
from .collection import read_table, resolve_local, resolve_zoo


class ZooSource:
    """The built-in zoo: trained offline by the zoo rule into ``results/{c}/zoo``."""

    def __init__(self, name: str, spec: dict, lock: str):
        if "zoo" not in spec:
            raise ValueError(f"collection {name}: source 'zoo' needs a 'zoo:' section")
        self.name, self.spec = name, zoospec.normalize_spec(spec["zoo"])
        self.folder = f"results/{name}/zoo"

    def resolve(self, write: bool = True):
        return resolve_zoo(self.name, self.spec, self.folder)

    # one job trains every model, so one job describes and extracts them all (a job per model
    # would cost more in process start-up than the work: models of a few KB)
    batched = True

    def fetch_inputs(self, key: str | None) -> list[str]:
        return [self.folder]  # one job trains every model

    def stage_inputs(self) -> list[str]:
        return [self.folder]

    batch = 0  # one job trains, describes and extracts every model

    def sheet(self):
        return None  # the zoo knows its models' tasks and splits

    def base_folder(self, evaluation: dict) -> str | None:
        if self.spec["kind"] in zoospec.BASE_KINDS:
            return f"{self.folder}/base"
        return evaluation.get("base")

    @property
    def trains_text(self) -> bool:
        """The realism zoo (PEFT LoRAs on the real MiniLM): it trains with 2 threads."""
        return self.spec["kind"] == "text-lora"


class LocalSource:
    """A folder of Hugging Face-style model folders (``path``)."""

    trains_text = False
    batched = False  # not one job for the whole collection (the zoo's)
    BATCH = 32  # default models per fetch+extract job (``batch`` in the collection's config)

    @property
    def batch(self) -> int:
        """Models per fetch+extract job (1: a job per model)."""
        return int(self.spec.get("batch", self.BATCH))

    def __init__(self, name: str, spec: dict, lock: str):
        if "path" not in spec:
            raise ValueError(f"collection {name}: source 'local' needs 'path:'")
        self.name, self.spec, self.lock = name, spec, lock

    def resolve(self, write: bool = True):
        """The rows of the folder's models; their files' digests are cached beside the lock
        (``file-digests.json``: a file is read again only when its size, time or inode change)."""
        from .io import write_json

        cache = Path(self.lock).with_name("file-digests.json")
        digests = json.loads(cache.read_text()) if cache.exists() else {}
        before = dict(digests)
        table = resolve_local(self.name, self.spec["path"], digests)
        if self.spec.get("evaluator") == "zoo":
            others = [r.id for r in table.itertuples() if not zoospec.is_zoo_model(r.path)]
            if others:
                raise ValueError(
                    f"collection {self.name}: the zoo evaluator scores the built-in zoo's MLPs only, and "
                    f"{others[:3]} are not such models: set evaluator (none, text-classification, "
                    "image-classification, causal-lm)")
        root = str(Path(self.spec["path"]).absolute())
        digests = {k: v for k, v in digests.items() if k.startswith(root + os.sep)}  # files of this folder only
        if write and digests != before:
            write_json(digests, cache)
        return table

    def sheet(self):
        """The collection's models sheet (``collection.read_sheet``): its ``models:`` path, else
        ``models.tsv`` in the folder; None without one."""
        from .collection import SHEET, read_sheet

        path = self.spec.get("models") or (Path(self.spec["path"]) / SHEET if self.spec.get("path") else None)
        if path is None or (not self.spec.get("models") and not Path(path).exists()):
            return None
        if not Path(path).exists():
            raise ValueError(f"collection {self.name}: models sheet {path} does not exist")
        return read_sheet(path, self.name)

    def fetch_inputs(self, key: str | None) -> list[str]:
        """The model's revision stamp (``collection.write_stamps``; absent only in a dry run of
        a new collection): its fetch reruns when the model changes, not when its folder moves."""
        stamp = Path(self.lock).parent / "revisions" / str(key)
        return [str(stamp)] if stamp.exists() else []

    def stage_inputs(self) -> list[str]:
        return []

    def base_folder(self, evaluation: dict) -> str | None:
        return evaluation.get("base")


class HubSource(LocalSource):
    """Hugging Face Hub repos (``repos``) or a query (``query``), pinned in the lock. A job per
    model: a download's time (and its retries, and a cluster job's runtime) is the model's own."""

    BATCH = 1

    def __init__(self, name: str, spec: dict, lock: str):
        from . import hub

        if not spec.get("repos") and not spec.get("query"):
            raise ValueError(f"collection {name}: source 'hub' needs 'repos:' or 'query:'")
        for e in spec.get("repos", []):
            hub.check_repo_id(e if isinstance(e, str) else e["id"], name)
        self.name, self.spec, self.lock = name, spec, lock

    def resolve(self, write: bool = True):
        """Ask the Hub only for what the lock does not have: new explicit ids, or the query when
        there is no lock yet or ``refresh`` is asked for. A rerun with a lock makes no request."""
        import pandas as pd

        from . import hub

        known = set(read_table(self.lock)["id"]) if os.path.exists(self.lock) else set()
        frames = []
        new = [e for e in self.spec.get("repos", []) if (e if isinstance(e, str) else e["id"]) not in known]
        if new:
            frames.append(hub.resolve_repos(new))
        if self.spec.get("query") and (not known or self.spec.get("refresh")):
            found = hub.resolve_query(self.spec["query"])
            frames.append(found[~found["id"].isin(known)])
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["key"])


SOURCES = {"zoo": ZooSource, "local": LocalSource, "hub": HubSource}


def source_for(name: str, spec: dict, lock: str):
    """The source of collection ``name`` (its config section ``spec``, its lock's path)."""
    if spec.get("source") not in SOURCES:
        raise ValueError(f"collection {name}: unknown source {spec.get('source')!r}; one of {sorted(SOURCES)}")
    return SOURCES[spec["source"]](name, spec, lock)
