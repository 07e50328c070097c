"""weightspace.sources: one interface for the zoo, local folders and the Hub."""

from pathlib import Path

import pytest
from snakemake.utils import validate

from weightspace.sources import HubSource, LocalSource, ZooSource, source_for

LOCK = "results/c/collection.tsv"
SCHEMA = str(Path(__file__).resolve().parents[1] / "config" / "schema.yaml")


def configured(spec: dict) -> dict:
    """A collection's section as the workflow sees it: validated, defaults filled in."""
    config = {"collections": {"c": spec}}
    validate(config, SCHEMA)
    return config["collections"]["c"]


def test_each_source_answers_the_workflows_questions(tmp_path):
    zoo = source_for("c", configured({"source": "zoo", "zoo": {"kind": "lora", "count": 3}}), LOCK)
    assert isinstance(zoo, ZooSource) and not zoo.trains_text
    assert zoo.fetch_inputs("results/c/zoo/model-001") == ["results/c/zoo"] == zoo.stage_inputs()
    assert zoo.base_folder({}) == "results/c/zoo/base"
    assert list(zoo.resolve()["key"]) == ["model-000", "model-001", "model-002"]
    mlp = source_for("c", configured({"source": "zoo", "zoo": {"kind": "mlp", "count": 3}}), LOCK)
    assert mlp.base_folder({"base": "b"}) == "b" and mlp.spec["hidden"]  # defaults filled in

    lock = str(tmp_path / "results" / "c" / "collection.tsv")
    local = source_for("c", configured({"source": "local", "path": str(tmp_path), "evaluator": "none"}), lock)
    assert isinstance(local, LocalSource)
    assert local.fetch_inputs("m") == [] and local.stage_inputs() == []  # no stamp yet (a dry run of a new one)
    (tmp_path / "results" / "c" / "revisions").mkdir(parents=True)
    (tmp_path / "results" / "c" / "revisions" / "m").write_text("rev\n\n")
    assert local.fetch_inputs("m") == [str(tmp_path / "results" / "c" / "revisions" / "m")]
    assert local.base_folder({"base": "b"}) == "b" and local.base_folder({}) is None

    hub = source_for("c", configured({"source": "hub", "repos": ["org/a"]}), lock)
    assert isinstance(hub, HubSource) and hub.fetch_inputs("m") == local.fetch_inputs("m")
    assert hub.stage_inputs() == []


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="collection c: unknown source 'ftp'"):
        source_for("c", {"source": "ftp"}, LOCK)
    with pytest.raises(ValueError, match="source 'zoo' needs a 'zoo:' section"):
        source_for("c", {"source": "zoo"}, LOCK)
    with pytest.raises(ValueError, match="source 'local' needs 'path:'"):
        source_for("c", {"source": "local"}, LOCK)
    with pytest.raises(ValueError, match="source 'hub' needs 'repos:' or 'query:'"):
        source_for("c", {"source": "hub"}, LOCK)
