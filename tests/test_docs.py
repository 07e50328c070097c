"""The documentation: config/README.md generated from the schema and current, every key
described, the README short, every relative link pointing at a file that exists."""

import importlib.util
import os
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


NUMBER_WORDS = {w: i for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                             "nine", "ten", "eleven", "twelve"])}


def test_numbers_the_docs_repeat_agree_with_each_other_and_with_what_they_count():
    """A number stated in two places is the same in both, and a count is the count: the demo's
    time (README and results.md), the default config's header (its number of collections), the
    bad inputs (README, the guide's total, the sum of its parts, the rows of its table)."""
    readme, results, guide = ((ROOT / p).read_text() for p in ("README.md", "docs/results.md", "docs/guide.md"))
    demo = re.search(r"`make run` from scratch[^*]*\*\*(\d+ min \d+ s)\*\*", readme)
    assert demo and demo[1] in results.split("\n\n")[1] + results, "README and results.md give other demo times"
    config = (ROOT / "config" / "config.yaml").read_text()
    said = re.search(r"^# (\w+) collections", config, re.M)
    assert said and NUMBER_WORDS[said[1].lower()] == len(yaml.safe_load(config)["collections"])
    total = re.search(r"(\d+) bad inputs tried here\s+\((\d+) local folders in the battery; (\d+) Hub cases[^;]*; (\d+) "
                      r"changes", guide)
    assert total, "the guide's count of bad inputs is not where this test reads it"
    n, local, hub, changes = map(int, total.groups())
    assert n == local + hub + changes
    table = guide.split("| bad input | reason in rejected.tsv (excerpt) |")[1].split("\n\n")[0]
    assert len([line for line in table.splitlines() if line.startswith("| ") and not line.startswith("|:")]) == local
    assert f"{n} bad inputs (guide)" in readme


def test_make_docs_keeps_the_rows_of_runs_that_are_not_here():
    """A table gathered from several configs' runs (transfer, across, exports) rebuilt after one
    run keeps the other runs' rows where they stood, and takes the fresh rows of its own."""
    md = make_docs()
    old = ("x\n<!-- across:start -->\n| a ~ b | metric |\n|:--|:--|\n| demo ~ base | cka |\n| demo ~ base | svcca |\n"
           "| minilm ~ base | cka |\n\nold note\n<!-- across:end -->\ny")
    new = "| a ~ b | metric |\n|:--|:--|\n| demo ~ base | CKA2 |\n| other ~ base | cka |\n\nnew note"
    table, kept = md.keep_absent(old, "across", new)
    assert kept == ["minilm ~ base"]
    assert table == ("| a ~ b | metric |\n|:--|:--|\n| demo ~ base | CKA2 |\n| minilm ~ base | cka |\n"
                     "| other ~ base | cka |\n\nnew note")
    assert md.keep_absent("no markers", "across", new) == (new, [])


def test_run_wide_figures_come_from_the_demo_and_a_collections_from_the_latest_run(tmp_path, monkeypatch):
    """After a demo and a later MiniLM run (runs/minilm-lora/), the overview copied into the docs
    is the demo's, not the later run's; a collection's figure made by both comes from the later."""
    md = make_docs()
    monkeypatch.setattr(md, "ROOT", tmp_path)
    demo, other = tmp_path / "results", tmp_path / "runs" / "minilm-lora" / "results"
    for root, tag in ((demo, b"demo"), (other, b"minilm")):
        for rel in ("figures/overview_sharing.png", "c/figures/full/accuracy_vs_k.png"):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_bytes(tag)
    os.utime(demo / "c/figures/full/accuracy_vs_k.png", (1, 1))
    os.utime(demo / "figures/overview_sharing.png", (1, 1))
    assert md.figure_source("figures/overview_sharing.png").read_bytes() == b"demo"
    assert md.figure_source("c/figures/full/accuracy_vs_k.png").read_bytes() == b"minilm"
    assert md.figure_source("figures/serving.png") is None
