"""A config checked against config/schema.yaml, each mistake in one line.

Snakemake's own ``validate`` fills in the schema's defaults, but a mistake makes it print the
whole schema (176 lines for one misspelt key). ``config_errors`` says, per mistake, where it is
and what is wrong, with the closest known key for an unknown one (difflib):

    config: subspace: unknown key 'maxk' (did you mean 'max_k'?)
    config: collections.z.zoo.count: 'many' is not of type 'integer'
"""

from __future__ import annotations

import difflib
from pathlib import Path


def _where(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _line(error) -> list[str]:
    """The lines of one jsonschema error: an unknown key names the key and the nearest known one."""
    where = _where(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = list(error.schema.get("properties", {}))
        out = []
        for key in sorted(set(error.instance) - set(known), key=str):
            near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(known)})"
            out.append(f"config: {where}: unknown key {key!r}{hint}")
        if out:
            return out
    return [f"config: {where}: {error.message}"]


def config_errors(config: dict, schema: dict) -> list[str]:
    """One line per mistake of ``config`` against ``schema`` (JSON Schema, the draft it names),
    in the order of the config's keys; empty when it is valid."""
    import jsonschema

    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    lines: list[str] = []
    for error in errors:
        # a oneOf / anyOf failure: the branch that came closest says more than "is not valid under any"
        best = jsonschema.exceptions.best_match([error]) if error.context else error
        lines += [line for line in _line(best) if line not in lines]
    return lines


def check_config(config: dict, schema_path: str | Path) -> None:
    """Raise ValueError listing every mistake (one line each) when ``config`` does not match the
    schema at ``schema_path``; the schema itself is never printed."""
    import yaml

    schema = yaml.safe_load(Path(schema_path).read_text())
    lines = config_errors(config, schema)
    if lines:
        raise ValueError("the config does not match config/schema.yaml (config/README.md lists every key):\n  "
                         + "\n  ".join(lines))


# The config's keys that name files or folders (a collection's own, then the top level's).
PATH_KEYS = (("path",), ("models",), ("zoo", "data_path"), ("evaluation", "base"), ("evaluation", "data"),
             ("evaluation", "validation"), ("evaluation", "tokenizer"), ("evaluation", "processor"),
             ("adapt", "data", "train"), ("adapt", "data", "validation"), ("adapt", "data", "test"))
TOP_PATH_KEYS = (("align", "probe"),)


def absolutize(config: dict, origin: str | Path) -> dict:
    """The config with its relative file and folder paths read from ``origin`` (the folder the
    user ran from, when the run's working directory is another: ``make run`` gives each config
    its own). A relative path becomes ``origin/path`` where that exists; otherwise it is left as
    it is (a Hub id such as ``google/vit-base-patch16-224`` for a tokenizer or processor).
    Changes ``config`` in place and returns it."""
    origin = Path(origin)

    def fix(section: dict, keys: tuple) -> None:
        *parents, last = keys
        for p in parents:
            section = section.get(p) if isinstance(section, dict) else None
        if isinstance(section, dict) and isinstance(section.get(last), str) and not Path(section[last]).is_absolute():
            there = origin / section[last]
            if there.exists():
                section[last] = str(there)

    for spec in (config.get("collections") or {}).values():
        for keys in PATH_KEYS:
            fix(spec, keys)
    for keys in TOP_PATH_KEYS:
        fix(config, keys)
    return config


def canonical_order(config: dict) -> dict:
    """Every mapping of the config with its keys sorted, except ``collections`` (its order is
    the run's order of collections), in place. Snakemake compares a job's params by their repr,
    so without this the same settings written in another key order (a config rewritten by a
    YAML tool, keys moved in an edit) would rerun every stage that reads them."""

    def ordered(value):
        if isinstance(value, dict):
            return {k: ordered(value[k]) for k in sorted(value, key=str)}
        if isinstance(value, list):
            return [ordered(v) for v in value]
        return value

    collections = config.get("collections")
    items = {k: ordered(v) for k, v in config.items() if k != "collections"}
    if isinstance(collections, dict):
        items["collections"] = {c: ordered(spec) for c, spec in collections.items()}
    config.clear()
    config.update(dict(sorted(items.items())))
    return config
