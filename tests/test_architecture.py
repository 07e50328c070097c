"""The import graph of the package: the layer rule of DESIGN.md, checked on the source.

Imports are read with the parser the code hashes use (module level and inside functions: a
lazy import is still an arrow)."""

import ast

from weightspace import codehash

ROOT = codehash.PACKAGE
SCRIPTS = ROOT.parents[1] / "workflow" / "scripts"
MODULES = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in ROOT.rglob("*.py")
                 if p.name != "__init__.py")


def imports(module: str) -> set[str]:
    path = codehash._module_file(module)
    return codehash._imports(path, ROOT, list(path.relative_to(ROOT).parent.parts)) - {module}


def third_party(module: str) -> set[str]:
    tree = ast.parse(codehash._module_file(module).read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level and n.module}
    return names


def cycle() -> list[str] | None:
    """One import cycle among the package's modules, or None."""
    state: dict[str, int] = {}

    def visit(m, stack):
        state[m] = 1
        stack.append(m)
        for n in sorted(imports(m)):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if not state.get(n) and (found := visit(n, stack)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in MODULES:
        if not state.get(m) and (found := visit(m, [])):
            return found
    return None


def test_the_package_has_no_import_cycle():
    assert cycle() is None, " -> ".join(cycle())


def test_the_cycle_finder_finds_one(monkeypatch):
    """The check itself can fail: a planted arrow back (core.sharing -> subspace) is a cycle."""
    real = imports
    monkeypatch.setitem(globals(), "imports",
                        lambda m: real(m) | ({"subspace"} if m == "core.sharing" else set()))
    assert cycle() is not None


def test_core_is_pure_numerics():
    """core/ imports nothing of ours outside core, and no I/O or workflow library."""
    core = [m for m in MODULES if m.startswith("core.")]
    assert core
    for m in core:
        assert all(n.startswith("core.") for n in imports(m)), (m, imports(m))
        assert not third_party(m) & {"zarr", "pandas", "snakemake", "safetensors", "huggingface_hub", "yaml"}, m


def test_no_module_imports_snakemake():
    assert [m for m in MODULES if "snakemake" in third_party(m)] == []


def test_jobs_that_only_read_results_and_the_workflow_parse_import_no_torch():
    """The spectra, figure and overview jobs read stored tables and draw: importing torch would be
    most of their time (2 s of a 4 s job), so nothing they import may reach it; nor may what the
    workflow imports when it is parsed (common.smk), which every Snakemake call and every cluster
    job pays."""
    import subprocess
    import sys

    scripts = ["spectra", "figures", "overview", "sweep_figure", "adapt_figure", "transfer_matrix"]
    mods = sorted({m for s in scripts for m in codehash.script_modules(SCRIPTS / f"{s}.py", ROOT)}
                  | {"collection", "sources", "zoospec", "codehash"})
    code = ("import importlib, sys\n"
            f"for m in {mods!r}: importlib.import_module('weightspace.' + m)\n"
            "from weightspace import spectra, figures\n"  # and their lazy imports, when called
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
