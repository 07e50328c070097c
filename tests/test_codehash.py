"""Code versions derived from imports: an edit to a module a step imports, even indirectly,
changes that step's hash and no other; no step misses a module it imports."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from weightspace import codehash

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "workflow" / "scripts").glob("*.py"))


def test_an_indirect_import_changes_only_the_steps_that_reach_it(tmp_path):
    pkg = tmp_path / "weightspace"
    shutil.copytree(codehash.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    steps = {s.name: codehash.script_modules(s, pkg) for s in SCRIPTS}
    before = {name: codehash.code_version(*mods, root=pkg) for name, mods in steps.items()}
    # core/stats.py is imported by subspace.py and spectra.py, not by their scripts themselves
    assert "core.stats" not in steps["subspace.py"] and "core.stats" not in steps["spectra.py"]
    with open(pkg / "core" / "stats.py", "a") as f:
        f.write("\n# an edit\n")
    codehash.closure.cache_clear()
    after = {name: codehash.code_version(*mods, root=pkg) for name, mods in steps.items()}
    changed = {n for n in steps if before[n] != after[n]}
    reach = {n for n, mods in steps.items() if "core.stats" in codehash.closure(*mods, root=pkg)}
    assert changed == reach and {"subspace.py", "spectra.py", "sweep.py"} <= changed
    assert not {"extract.py", "fetch.py", "zoo.py", "screen.py"} & changed


LOADER = """
import importlib, json, sys
out = {}
for name, mods in json.loads(sys.argv[1]).items():
    for k in [k for k in sys.modules if k == "weightspace" or k.startswith("weightspace.")]:
        del sys.modules[k]  # each script's imports from scratch (third-party modules stay loaded)
    for m in mods:
        importlib.import_module("weightspace." + m)
    out[name] = sorted(k for k in sys.modules if k.startswith("weightspace."))
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def loaded_by_script():
    """For every script: the package modules that importing what it imports loads (one
    process for all scripts, the package's modules dropped from sys.modules between them)."""
    mods = {s.name: codehash.script_modules(s) for s in SCRIPTS}
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps(mods)], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_step_misses_a_module_it_imports(script, loaded_by_script):
    """Importing what the script imports loads only modules inside the step's closure."""
    mods = codehash.script_modules(script)
    loaded = {m.removeprefix("weightspace.") for m in loaded_by_script[script.name]}
    loaded = {m for m in loaded if not (codehash.PACKAGE / m.replace(".", "/") / "__init__.py").exists()}
    assert loaded, "nothing loaded: the check would pass vacuously"
    assert loaded <= set(codehash.closure(*mods)), loaded - set(codehash.closure(*mods))
