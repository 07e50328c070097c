"""Write one benchmark's section of BENCHMARKS.md, keeping the other sections."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEADER = "# Benchmarks\n\nEach section is written by the script it names; rerun the script to refresh it.\n"


def machine() -> str:
    gpu = ""
    if os.environ.get("WS_BENCH_DEVICE") == "cuda":
        import torch

        gpu = f", {torch.cuda.get_device_name(0)}, torch {torch.__version__}"
    return (f"{platform.machine()}, {os.cpu_count()} cores{gpu}, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d')}")


def write_section(title: str, command: str, body: str) -> None:
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else HEADER
    section = f"## {title}\n\nCommand: `{command}`. Machine: {machine()}.\n\n{body.strip()}\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip() + "\n\n" + section
    path.write_text(text)


def basis_collections(results: str | Path):
    """(name, view, accepted basis store paths) of every collection of a finished run's results
    folder: the view is delta for adapters, full otherwise."""
    import pandas as pd

    from weightspace.collection import accepted_stores

    for lock in sorted(Path(results).glob("*/collection.tsv")):
        c = lock.parent
        table = pd.read_csv(lock, sep="\t", dtype=str, keep_default_na=False)
        basis = [str(c / "weights" / f"{k}.zarr") for k in table.loc[table["split"] == "basis", "key"]]
        view = "delta" if (table["format"] == "lora").any() else "full"
        yield c.name, view, accepted_stores(basis, str(c / "screen.tsv"))


def publish(title: str, command: str, body: str, write: bool) -> None:
    """Print a benchmark's section, and write it into BENCHMARKS.md when asked."""
    print(body)
    if write:
        write_section(title, command, body)
