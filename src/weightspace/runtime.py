"""What every workflow script needs: the job (Snakemake's or a stand-in), log redirection,
thread count, device choice.

Every script begins ``smk = job(globals())``: under Snakemake that is Snakemake's own
``snakemake`` object; run by hand (``python workflow/scripts/project.py job.yaml``, for a
debugger) it is a stand-in read from the YAML file, with the keys input, output, params,
wildcards, log, threads, resources and config. Each job under Snakemake writes its stand-in
beside its log (``<log>.job.yaml``), so a failed job reruns outside Snakemake as it ran.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings


class Items(list):
    """Snakemake's named list, as the stand-in needs it: entries by position (named lists
    flattened, as Snakemake does) and by name (``smk.input.stores``)."""

    def __init__(self, entries=None):
        entries = entries if entries is not None else []
        self._names = dict(entries) if isinstance(entries, dict) else {}
        flat = []
        for value in (self._names.values() if self._names else entries):
            flat.extend(value if isinstance(value, list) else [value])
        super().__init__(flat)

    def __getattr__(self, name):
        try:
            return self.__dict__["_names"][name]
        except KeyError:
            raise AttributeError(f"the job has no entry {name!r}") from None


class StandIn:
    """A Snakemake job read from a dict (the YAML file of a job)."""

    def __init__(self, spec: dict):
        unknown = set(spec) - {"input", "output", "params", "wildcards", "log", "threads", "resources", "config"}
        if unknown:
            raise ValueError(f"job file: unknown keys {sorted(unknown)}")
        for key in ("input", "output", "params", "wildcards", "log", "resources"):
            setattr(self, key, Items(spec.get(key)))
        self.threads = int(spec.get("threads", 1))
        self.config = spec.get("config", {})


def job(namespace: dict):
    """Snakemake's ``snakemake`` object from a script's globals, else the stand-in read from the
    YAML file named on the command line."""
    if "snakemake" in namespace:
        return namespace["snakemake"]
    if len(sys.argv) != 2:
        sys.exit(f"usage: python {sys.argv[0]} JOB.yaml   (a job file: see weightspace.runtime; "
                 "Snakemake writes one beside each job's log)")
    import yaml

    with open(sys.argv[1]) as f:
        return StandIn(yaml.safe_load(f))


def job_spec(smk) -> dict:
    """The stand-in's dict of a Snakemake job (plain values only: paths, numbers, strings)."""

    def named(items):
        names = dict(items.items()) if hasattr(items, "items") else {}
        if names:
            return {k: (list(v) if isinstance(v, list) else v) for k, v in names.items()}
        return list(items)

    return {"input": named(smk.input), "output": named(smk.output), "params": named(smk.params),
            "wildcards": named(smk.wildcards), "log": list(smk.log), "threads": smk.threads}


def pick_device(choice: str = "auto") -> str:
    """'cuda' when available for 'auto', else 'cpu'; an explicit 'cuda' without a GPU fails."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no GPU")
    return choice


def set_threads(n: int) -> None:
    """Give torch exactly the job's threads (oversubscription makes 2 jobs run 10× slower)."""
    n = max(1, int(n))
    os.environ["OMP_NUM_THREADS"] = str(n)
    if "torch" in sys.modules:  # steps that never import torch do not pay for it
        sys.modules["torch"].set_num_threads(n)


def return_large_frees(threshold: int = 1 << 20) -> bool:
    """Have glibc's malloc serve every allocation of ``threshold`` bytes or more by mmap, so that
    freeing it returns the memory to the system. By default glibc raises that threshold after
    the first large free (up to 32 MB), and a loop that makes n×n temporaries (a kernel, a
    neighbour search) while keeping small results then leaves each temporary's memory stranded
    between them: 6 MB of resident memory per model at n = 1000 in the alignment stage, 17 GB at
    1000 models (measured; flat with this). The alignment jobs set it (every large allocation
    then costs fresh pages, so it is not set for the jobs that do not need it). No effect off
    glibc. Returns whether it was set."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(-3, threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def script(smk):
    """Run a Snakemake script body with stdout/stderr in its log and threads set.

    Yields a ``logging.Logger``; tqdm progress bars go to the log through stderr.
    """
    log_path = smk.log[0] if len(smk.log) else None
    if log_path and not isinstance(smk, StandIn):
        _write_job_file(smk, log_path + ".job.yaml")
    stream = open(log_path, "w", buffering=1) if log_path else None
    old = sys.stdout, sys.stderr
    if stream:
        sys.stdout = sys.stderr = stream
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, force=True,
                        format="%(asctime)s %(levelname)s %(message)s")
    # Snakemake marks directory() outputs with a .snakemake_timestamp file, which Zarr reports
    # in every store it opens: a known, harmless file, not a problem worth a log line.
    warnings.filterwarnings("ignore", message=r"Object at \.snakemake_timestamp is not recognized")
    set_threads(smk.threads)
    try:
        yield logging.getLogger("weightspace")
    except Exception:
        logging.getLogger("weightspace").exception("failed")
        raise
    finally:
        sys.stdout, sys.stderr = old
        if stream:
            stream.close()


def _write_job_file(smk, path: str) -> None:
    import yaml

    try:
        text = yaml.safe_dump(job_spec(smk), sort_keys=False)
    except yaml.YAMLError:  # a parameter that is not plain data: no stand-in for this job
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
