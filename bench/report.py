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
