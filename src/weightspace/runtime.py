"""What every workflow script needs: log redirection, thread count, device choice."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings


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


@contextlib.contextmanager
def script(smk):
    """Run a Snakemake script body with stdout/stderr in its log and threads set.

    Yields a ``logging.Logger``; tqdm progress bars go to the log through stderr.
    """
    log_path = smk.log[0] if len(smk.log) else None
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
