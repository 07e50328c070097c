"""Collections on the Hugging Face Hub: resolve to pinned shas, fetch safetensors into the cache.

- ``resolve_repos`` / ``resolve_query`` turn explicit ids (optionally with revisions) or a
  model query (author, search, filter, sort, limit) into collection rows, each pinned to the
  40-character commit sha the Hub reports. The collection table is then the lock: reruns use
  the pinned shas and never ask the Hub again unless the lock is refreshed explicitly.
- ``fetch`` downloads one pinned model with ``huggingface_hub.snapshot_download``: only
  ``*.safetensors``, ``*.safetensors.index.json`` and ``*.json`` files, into the Hugging Face
  cache (``HF_HOME`` / ``HF_HUB_CACHE`` respected), resumable after an interruption. The token
  comes from ``HF_TOKEN`` through huggingface_hub itself and is never logged or written.

A model that cannot be used (missing repo or revision, gated without access, only pickle
weights, a corrupt or truncated file) is not an exception here: ``fetch`` returns a manifest
with ``status: rejected`` and a reason naming the repo, so the run goes on without it (or
stops, with ``strict: true``). A Hub that cannot be reached is not a property of any model:
it raises ``HubUnreachable`` (one sentence naming the endpoint), the job fails and a rerun
with the network back (or ``HF_HUB_OFFLINE=1`` and the cache) tries again; it never becomes a
rejection, which would be cached.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas is imported by the functions that make tables: fetch needs none
    import pandas as pd

from . import layers
from .collection import slugify, unnamed_key

log = logging.getLogger("weightspace")

ALLOW_PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json"]


def _api(endpoint: str | None = None):
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint)


def _format_from_files(files: list[str]) -> str:
    return "lora" if "adapter_config.json" in {os.path.basename(f) for f in files} else "full"


def _row(model_id: str, sha: str, files: list[str], note: str = "") -> dict:
    try:
        key = slugify(model_id)
    except ValueError as exc:  # an id with no safe key: a row all the same, rejected by its fetch
        key, sha, note = unnamed_key(model_id), "", note or str(exc)
    return {"key": key, "id": model_id, "source": "hub", "revision": sha,
            "format": _format_from_files(files) if files else "", "task": "", "path": "", "note": note}


class HubUnreachable(RuntimeError):
    """The Hub could not be reached (no connection, offline mode without the file cached)."""


def _unreachable(exc: BaseException) -> bool:
    """A connection failure rather than an answer of the Hub: huggingface_hub's
    LocalEntryNotFoundError (it could not connect and the file is not cached, a subclass of its
    404 EntryNotFoundError), offline mode, and the HTTP client's transport errors (connect,
    read, timeout; found by class name, as huggingface_hub's HTTP client has been httpx and a
    renamed copy of it)."""
    from huggingface_hub import errors

    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return True
    return any(c.__name__ in ("TransportError", "TimeoutException", "NetworkError") for c in type(exc).__mro__)


@contextlib.contextmanager
def reaching_the_hub(endpoint: str | None = None):
    """Turn a connection failure inside the block into ``HubUnreachable`` with one sentence."""
    try:
        yield
    except Exception as exc:
        if not _unreachable(exc):
            raise
        from huggingface_hub import constants

        where, why = endpoint or constants.ENDPOINT, (str(exc).splitlines() or [""])[0][:200]
        raise HubUnreachable(
            f"the Hub at {where} could not be reached ({type(exc).__name__}: {why}); "
            "no model was rejected for it: rerun when it can be reached, or set HF_HUB_OFFLINE=1 to use only "
            "the models already in the Hugging Face cache") from None


def describe_error(model_id: str, exc: Exception) -> str:
    """A one-line reason, naming the repo, for a Hub error (never includes a token)."""
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        code = getattr(getattr(exc, "response", None), "status_code", None)
        if code == 403:
            return (f"{model_id}: gated repository (403): the token has no access; accept the licence on the "
                    "Hub with the account the token belongs to")
        return f"{model_id}: gated repository (401): accept its licence on the Hub and set HF_TOKEN"
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"{model_id}: revision not found (404)"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return f"{model_id}: repository not found (404), or private without access"
    if isinstance(exc, errors.EntryNotFoundError):
        return f"{model_id}: a file listed by the Hub was not found (404)"
    from huggingface_hub.utils import HFValidationError

    if isinstance(exc, HFValidationError):
        return f"{model_id!r}: not a valid Hub repo id ({exc})"
    return f"{model_id}: {type(exc).__name__}: {exc}"


def check_repo_id(model_id: str, collection: str = "?") -> None:
    """Refuse, before any request, a repo id huggingface_hub itself refuses (its validator)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(model_id)
    except HFValidationError as exc:
        raise ValueError(f"collection {collection}: {model_id!r} is not a valid Hub repo id ({exc})") from None


def resolve_repos(entries: list, endpoint: str | None = None) -> pd.DataFrame:
    """Rows for explicit repos: ``"org/name"`` or ``{id, revision}``; each pinned to its sha.

    A repo the Hub refuses gets a row with an empty revision and the reason in ``note``; its
    fetch job turns that into a rejection.
    """
    import pandas as pd

    from huggingface_hub import errors
    from huggingface_hub.utils import HFValidationError

    api, rows = _api(endpoint), []
    for entry in entries:
        model_id, revision = (entry, None) if isinstance(entry, str) else (entry["id"], entry.get("revision"))
        try:
            with reaching_the_hub(endpoint):
                info = api.model_info(model_id, revision=revision)
            rows.append(_row(model_id, info.sha, [s.rfilename for s in (info.siblings or [])]))
        except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.GatedRepoError,
                HFValidationError) as exc:  # the last: a query's answer huggingface_hub itself refuses
            log.warning("%s", describe_error(model_id, exc))
            rows.append(_row(model_id, "", [], describe_error(model_id, exc)))
    return pd.DataFrame(rows)


def resolve_query(query: dict, endpoint: str | None = None) -> pd.DataFrame:
    """Rows for a model query (``author``, ``search``, ``filter``, ``sort``, ``limit``)."""
    api = _api(endpoint)
    kwargs = {k: query[k] for k in ("author", "search", "filter", "sort", "limit") if query.get(k) is not None}
    with reaching_the_hub(endpoint):
        ids = [m.id for m in api.list_models(**kwargs)]
    if not ids:
        raise ValueError(f"the Hub query {kwargs} returned no models")
    return resolve_repos(ids, endpoint)


def fetch(model_id: str, revision: str, note: str = "", endpoint: str | None = None,
          cache_dir: str | None = None) -> dict:
    """Download one pinned model (safetensors and JSON only) and describe it.

    Returns the manifest of :func:`weightspace.layers.manifest` plus ``id`` and ``revision``,
    or ``{"status": "rejected", "reason": ...}`` for a model that cannot be used. A Hub that
    cannot be reached raises ``HubUnreachable`` and other transient errors (5xx) raise, so that
    the job fails and can be retried; neither is a rejection.
    """
    from huggingface_hub import errors, snapshot_download

    base = {"id": model_id, "revision": revision}
    if not revision:
        return {**base, "status": "rejected", "reason": note or f"{model_id}: could not be resolved"}
    try:
        with reaching_the_hub(endpoint):  # before the rejections: LocalEntryNotFoundError is a 404's subclass
            folder = snapshot_download(model_id, revision=revision, allow_patterns=ALLOW_PATTERNS,
                                       cache_dir=cache_dir, endpoint=endpoint)
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError, errors.GatedRepoError,
            errors.EntryNotFoundError) as exc:
        return {**base, "status": "rejected", "reason": describe_error(model_id, exc)}
    man = layers.manifest(folder, model_id)
    if man["status"] != "ok" and not any(Path(folder).glob("*.safetensors")):
        with reaching_the_hub(endpoint):
            files = _api(endpoint).list_repo_files(model_id, revision=revision)
        pickles = sorted(f for f in files if f.endswith(layers.PICKLE_SUFFIXES))
        if pickles:
            man["reason"] = (f"model {model_id}: only pickle checkpoints {pickles[:3]} on the Hub; "
                             "weightspace loads safetensors only and never downloads or unpickles them")
    return {**base, **man}


def manifest_for(row: dict, endpoint: str | None = None) -> dict:
    """The fetch step of any source: download a Hub model, or describe a local/zoo folder."""
    if row["source"] == "hub":
        return {"key": row["key"], **fetch(row["id"], row["revision"], row.get("note", ""), endpoint)}
    if row.get("note") and not row["revision"]:  # the folder could not be read when the collection was listed
        return {"key": row["key"], "id": row["id"], "revision": "", "status": "rejected", "reason": row["note"]}
    return {"key": row["key"], "id": row["id"], "revision": row["revision"],
            **layers.manifest(row["path"], row["id"])}
