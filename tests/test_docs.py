"""The documentation: config/README.md generated from the schema and current, every key
described, the README short, every relative link pointing at a file that exists."""

import importlib.util
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())


def make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "docs" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def undescribed(node, path=""):
    """Keys of the schema without a description (a $ref'd key is described where it is defined)."""
    out = []
    if not isinstance(node, dict) or "$ref" in node:
        return out
    for key, child in (node.get("properties") or {}).items():
        if isinstance(child, dict) and "description" not in child and "$ref" not in child:
            out.append(path + key)
        out += undescribed(child, f"{path}{key}.")
    for key in ("items", "additionalProperties"):
        out += undescribed(node.get(key), f"{path}*.")
    for alt in node.get("oneOf", []):
        out += undescribed(alt, path)
    return out


def test_every_config_key_is_described():
    missing = undescribed(SCHEMA) + [m for name, d in SCHEMA["$defs"].items() for m in undescribed(d, f"{name}.")]
    assert missing == []
    assert undescribed({"properties": {"a": {"type": "integer"}}}) == ["a"]  # the check can fail


def test_config_readme_is_generated_and_current():
    text = (ROOT / "config" / "README.md").read_text()
    assert text == make_docs().config_reference(SCHEMA), "config/README.md is stale: run `make docs`"
    assert "## collections.<name>" in text
    for key in ("subspace.null_draws", "source", "report.margin", "align.clamp_quantile", "heldout_fraction"):
        assert f"`{key}`" in text


def test_readme_is_an_entry_point():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 10_000
    assert "make run" in readme and "make test" in readme and "download.pytorch.org/whl/cpu" in readme


def test_relative_links_resolve():
    docs = [ROOT / "README.md", ROOT / "config" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for doc in docs:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if not re.match(r"[a-z]+://", target) and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []
