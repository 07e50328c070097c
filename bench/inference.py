"""Benchmark: serving a collection, N models in one batch: the bank against N dense models and
PEFT's mixed-batch LoRA inference.

    .venv/bin/python bench/inference.py [--ns 1 10 100 1000] [--blocks 2] [--rows 1024] [--k 16]
        [--zoo results/digits-lora] [--realism results/minilm-lora] [--device cpu] [--write]

Three workloads, each batch of ``--rows`` rows where every row belongs to one of N models
drawn at random (so a batch holds about N·(1 − e^(−rows/N)) distinct models):

- synthetic ViT-B-shaped layer stacks: ``--blocks`` blocks of 768×768 ×4 (query, key, value,
  output), 768×3072 and 3072×768, biases; model i = R + U_r C_i U_cᵀ per matrix at ``--k``, its
  own biases. Rows are single vectors (the hardest case for per-row overheads).
- the zoo (``--zoo``, a finished run's LoRA collection): its delta bank at k = 16 against its
  original adapters (PEFT) and the merged models (dense), on digits.
- the realism collection (``--realism``, a finished ``make realism``): real PEFT LoRAs with
  per-model heads on the real MiniLM, its delta bank (the bank rule's file), on real text.

Methods, same rows and models in one run:

- ``dense, one model``: one model on every row (the floor every method pays);
- ``dense, N models``: each model its own copy, each run on its own rows (memory N×);
- ``PEFT mixed batch, r=…``: one base with N LoRA adapters, ``model(x, adapter_names=[…])``
  (PEFT loops over the distinct adapters of the batch); r = k holds the bank's models exactly
  (B = U_r C_i, A = U_cᵀ on base R: checked equal), r = the bank's bytes per model rounded up;
  PEFT cannot hold per-model biases, so its rows carry the shared ones;
- ``bank``: ``weightspace.bank.attach``: one shared product per layer, each row's k×k core.

Reported per method and N: seconds per batch (median of ``--repeats`` after two warm-ups),
rows/s, the tensor bytes the method holds (parameters and buffers, shared storage counted
once), and the set-up time (building N dense models, adding N PEFT adapters, loading the
bank file). ``--write`` replaces the "Serving a collection" section of BENCHMARKS.md and writes
docs/figures/bank_inference.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from weightspace.bank import Bank, Matrix, attach, load_bank

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"query": (768, 768), "key": (768, 768), "value": (768, 768), "output": (768, 768),
          "intermediate": (3072, 768), "out": (768, 3072)}


class Block(torch.nn.Module):
    """A ViT-B-shaped block of Linear layers (no attention: the linear layers are what differ)."""

    def __init__(self):
        super().__init__()
        for name, (m, n) in SHAPES.items():
            setattr(self, name, torch.nn.Linear(n, m))

    def forward(self, x):
        x = x + self.output(self.query(x) + self.key(x) + self.value(x))
        return x + self.out(F.gelu(self.intermediate(x)))


class Stack(torch.nn.Sequential):
    def __init__(self, blocks: int):
        super().__init__(*[Block() for _ in range(blocks)])


def tensor_bytes(*objs) -> int:
    """Bytes of the distinct storages behind the tensors of modules / tensors / banks."""
    seen, total = set(), 0
    for obj in objs:
        if isinstance(obj, torch.nn.Module):
            ts = list(obj.parameters()) + list(obj.buffers())
        elif isinstance(obj, Bank):
            ts = [t for m in obj.matrices.values() for t in (m.mean, m.U_row, m.U_col, m.coef)]
            ts += list(obj.kept.values()) + list(obj.scales.values())
        else:
            ts = list(obj)
        for t in ts:
            if t.device.type == "meta":
                continue
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total


def timed(fn, repeats: int, device) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after two warm-ups."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()
    with torch.no_grad():
        fn()
        fn()
        sync()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def orth(n, k, g):
    return torch.linalg.qr(torch.randn(n, k, generator=g))[0]


# ----------------------------------------------------------------------------- synthetic stacks
def synthetic_bank(base: Stack, N: int, k: int, g) -> Bank:
    """N models of the stack's shapes: W_i = R + U_r C_i U_cᵀ (R the base's weight), own biases."""
    mats, kept = {}, {}
    for name, p in base.named_parameters():
        if name.endswith(".weight"):
            m, n = p.shape
            C = torch.randn(N, k, k, generator=g) * (p.norm() / k / 4)  # each model ~ a quarter of ‖R‖ away
            mats[name] = Matrix(name, (m, n), "weight", p.detach().clone(), orth(m, k, g), orth(n, k, g), C)
        else:
            kept[name] = p.detach() + 0.01 * torch.randn(N, *p.shape, generator=g)
    return Bank("full", k, [f"m{i}" for i in range(N)], mats, kept)


def dense_models(bank: Bank, base: Stack, rows: list[int]) -> dict[int, Stack]:
    """Each listed model as its own dense stack (weights materialised)."""
    out = {}
    for i in rows:
        model = copy.deepcopy(base)
        model.load_state_dict(bank.weights(i), strict=True)
        out[i] = model
    return out


def run_dense(models: dict[int, torch.nn.Module], x, ids, **kw):
    out = None
    for i in ids.unique().tolist():
        idx = (ids == i).nonzero().squeeze(1)
        y = models[i](x[idx], **kw)
        y = y.logits if hasattr(y, "logits") else y
        out = y.new_empty(len(ids), *y.shape[1:]) if out is None else out
        out[idx] = y
    return out


def peft_model(base: torch.nn.Module, bank: Bank | None, N: int, r: int, targets: list[str], g, exact: bool):
    """One base with N LoRA adapters of rank r on ``targets``: exactly the bank's models when
    ``exact`` (r = k: B = U_r C_i, A = U_cᵀ, scale 1), else random factors of that rank."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=r, target_modules=targets, lora_dropout=0.0, init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(base), cfg, adapter_name="a0")
    for i in range(1, N):
        model.add_adapter(f"a{i}", cfg)
    with torch.no_grad():
        for mod_name, mod in model.base_model.model.named_modules():
            if not hasattr(mod, "lora_A"):
                continue
            weight = mod_name + ".weight"
            for i in range(N):
                A, B = mod.lora_A[f"a{i}"].weight, mod.lora_B[f"a{i}"].weight
                if exact:
                    m = bank.matrices[weight]
                    A.copy_(m.U_col.T)
                    B.copy_(m.U_row @ m.coef[i])
                else:
                    A.copy_(torch.randn(A.shape, generator=g) / math.sqrt(A.shape[1]))
                    B.copy_(torch.randn(B.shape, generator=g) * 0.01)
    return model.eval()


def synthetic(args, device, log) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    base = Stack(args.blocks).eval()
    x_all = torch.randn(args.rows, 768, generator=g)
    rows_out = []
    one_model_bytes = tensor_bytes(base)
    t_dense1 = None
    for N in args.ns:
        bank = synthetic_bank(base, N, args.k, g)
        ids = torch.randint(0, N, (args.rows,), generator=g)
        distinct = len(ids.unique())
        x = x_all.to(device)
        # the floor: one dense model on every row (measured again beside every N)
        b0 = copy.deepcopy(base).to(device)
        t_dense1 = timed(lambda: b0(x), args.repeats, device)
        rows_out.append(row("synthetic", N, 1, "dense, one model", t_dense1, one_model_bytes, None, args.rows))
        log(rows_out[-1])
        b0 = None
        # the bank, written and loaded back as a user would
        with tempfile.TemporaryDirectory() as tmp:
            bank.save(Path(tmp) / "bank")
            t0 = time.perf_counter()
            loaded = load_bank(Path(tmp) / "bank", device=device)
            served = attach(loaded, copy.deepcopy(base).to(device))
            t_load = time.perf_counter() - t0
        dev_ids = ids.to(device)
        t_bank = timed(lambda: served(x, model_ids=dev_ids), args.repeats, device)
        rows_out.append(row("synthetic", N, distinct, f"bank, k={args.k}", t_bank,
                            tensor_bytes(served.model, served.bank), t_load, args.rows))
        log(rows_out[-1])
        # N dense models (skipped where they would not fit in memory)
        need = N * one_model_bytes
        if need <= args.dense_limit_gb * 2**30:
            t0 = time.perf_counter()
            dense = {i: m.to(device) for i, m in dense_models(bank, base, ids.unique().tolist()).items()}
            t_build = time.perf_counter() - t0
            with torch.no_grad():
                err = float((run_dense(dense, x, dev_ids) - served(x, model_ids=dev_ids)).abs().max())
            t = timed(lambda: run_dense(dense, x, dev_ids), args.repeats, device)
            rows_out.append(row("synthetic", N, distinct, "dense, N models", t, need, t_build, args.rows,
                                f"largest difference to the bank {err:.1e}"))
            dense = None
        else:
            rows_out.append(row("synthetic", N, distinct, "dense, N models", float("nan"), need, None, args.rows,
                                f"not run: {need / 2**30:.0f} GiB"))
        log(rows_out[-1])
        # PEFT mixed batch: r = k (the same models) and r = the bank's bytes per model
        names = [ids_name(i) for i in ids.tolist()]
        variants = [(args.k, True)]
        if N <= args.peft_bytes_max_n:  # PEFT's set-up grows as N² (~12 min for 1000 adapters here): once is enough
            variants.append((max(1, math.ceil(args.k * args.k / (768 + 768))), False))
        for r, exact in variants:
            t0 = time.perf_counter()
            pm = peft_model(base, bank, N, r, list(SHAPES), g, exact).to(device)
            t_setup = time.perf_counter() - t0
            note = ""
            if exact:
                shared = attach(synthetic_bank_shared_bias(bank, base), copy.deepcopy(base).to(device))
                with torch.no_grad():
                    err = float((pm(x, adapter_names=names) - shared(x, model_ids=dev_ids)).abs().max())
                note = f"largest difference to the bank {err:.1e} (shared biases)"
                del shared
            t = timed(lambda: pm(x, adapter_names=names), args.repeats, device)
            label = f"PEFT mixed batch, r={r}" + (" (the same models)" if exact else " (≈ the bank's bytes)")
            rows_out.append(row("synthetic", N, distinct, label, t, tensor_bytes(pm), t_setup, args.rows, note))
            log(rows_out[-1])
            pm = None
        served = loaded = bank = None  # freed before the next N
    return rows_out


def ids_name(i: int) -> str:
    return f"a{i}"


def synthetic_bank_shared_bias(bank: Bank, base: Stack) -> Bank:
    """The bank with the base's biases shared by every model (what PEFT's adapters can hold)."""
    b = copy.copy(bank)
    b.kept = {}
    return b


def row(workload, N, distinct, method, seconds, nbytes, setup, rows, note=""):
    return {"workload": workload, "N": N, "distinct": distinct, "method": method, "seconds": seconds,
            "rows_per_s": rows / seconds if seconds == seconds else float("nan"), "MB": nbytes / 2**20,
            "setup_s": setup, "note": note}


# ----------------------------------------------------------------------------- real collections
def collection(args, kind: str, folder: Path, device, log) -> list[dict]:
    """A finished run's adapter collection: its bank (the bank rule's file), PEFT with the
    original adapters (``adapter_names``), and the dense merged models."""
    from peft import PeftModel

    from weightspace import zoo

    bank_dir = sorted(p for p in (folder / "bank" / "delta").glob("k*") if p.is_dir())
    if not bank_dir:
        raise FileNotFoundError(f"{folder}: no bank (run the workflow with export.ks set)")
    bank_dir = bank_dir[-1]
    c = folder.name
    zoo_dir = folder / "zoo"
    g = torch.Generator().manual_seed(1)
    if kind == "zoo":
        base = zoo.MLP.from_folder(zoo_dir / "base").eval()
        data = zoo.load_digits(0)
        inputs = {"x": data.x_test[: args.rows_real].to(device)}
        call = lambda m, **kw: m(inputs["x"], **kw)  # noqa: E731
    else:
        import pandas as pd
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        base = AutoModelForSequenceClassification.from_pretrained(zoo_dir / "base").eval()
        tok = AutoTokenizer.from_pretrained(zoo_dir / "base")
        texts = list(pd.read_parquet(zoo_dir / "eval.parquet").text.astype(str))[: args.rows_real]
        inputs = {k: v.to(device) for k, v in tok(texts, padding=True, truncation=True, max_length=48,
                                                    return_tensors="pt").items()}
        call = lambda m, **kw: m(**inputs, **kw).logits  # noqa: E731
    base = base.to(device)
    n_rows = len(next(iter(inputs.values())))
    t0 = time.perf_counter()
    served = attach(load_bank(bank_dir, device=device), copy.deepcopy(base))
    t_load = time.perf_counter() - t0
    keys = served.bank.models
    out = []
    t1 = timed(lambda: call(base), args.repeats, device)
    out.append(row(c, 1, 1, "dense, one model (the base)", t1, tensor_bytes(base), None, n_rows))
    for N in sorted({1, min(10, len(keys)), len(keys)}):
        ids = torch.randint(0, N, (n_rows,), generator=g)
        distinct = len(ids.unique())
        names = [keys[i] for i in ids.tolist()]
        dev_ids = ids.to(device)
        t = timed(lambda: call(served, model_ids=dev_ids), args.repeats, device)
        out.append(row(c, N, distinct, f"bank, k={served.bank.k}", t, tensor_bytes(served.model, served.bank),
                       t_load, n_rows))
        t0 = time.perf_counter()
        pm = PeftModel.from_pretrained(copy.deepcopy(base), str(zoo_dir / keys[0]), adapter_name=keys[0])
        for key in keys[1:N]:
            pm.load_adapter(str(zoo_dir / key), adapter_name=key)
        pm = pm.to(device).eval()
        t_setup = time.perf_counter() - t0
        r = pm.peft_config[keys[0]].r
        t = timed(lambda: call(pm, adapter_names=names), args.repeats, device)
        out.append(row(c, N, distinct, f"PEFT mixed batch, r={r} (the original adapters)", t, tensor_bytes(pm),
                       t_setup, n_rows))
        t0 = time.perf_counter()
        dense = {}
        for i in range(N):
            m = PeftModel.from_pretrained(copy.deepcopy(base), str(zoo_dir / keys[i])).merge_and_unload()
            dense[i] = m.to(device).eval()
        t_build = time.perf_counter() - t0
        run = (lambda: run_dense(dense, inputs["x"], dev_ids)) if kind == "zoo" else \
            (lambda: run_dense_text(dense, inputs, dev_ids))
        t = timed(run, args.repeats, device)
        out.append(row(c, N, distinct, "dense, N models (merged originals)", t, sum(tensor_bytes(m) for m in dense.values()),
                       t_build, n_rows))
        for r_ in out[-3:]:
            log(r_)
        pm = dense = None
    return out


def run_dense_text(models, inputs, ids):
    out = None
    for i in ids.unique().tolist():
        idx = (ids == i).nonzero().squeeze(1)
        y = models[i](**{k: v[idx] for k, v in inputs.items()}).logits
        out = y.new_empty(len(ids), *y.shape[1:]) if out is None else out
        out[idx] = y
    return out


# ----------------------------------------------------------------------------- report
def mb(x: float) -> str:
    return f"{x:,.0f}" if x >= 10 else f"{x:.2f}"


def table(rows: list[dict]) -> str:
    lines = ["| workload | N | distinct in batch | method | s / batch | rows/s | tensor MB | set-up s | note |",
             "|:--|--:|--:|:--|--:|--:|--:|--:|:--|"]
    for r in rows:
        s = "—" if r["seconds"] != r["seconds"] else f"{r['seconds']:.3f}"
        rps = "—" if r["rows_per_s"] != r["rows_per_s"] else f"{r['rows_per_s']:,.0f}"
        setup = "" if r["setup_s"] is None else f"{r['setup_s']:.2f}"
        lines.append(f"| {r['workload']} | {r['N']} | {r['distinct']} | {r['method']} | {s} | {rps} | "
                     f"{mb(r['MB'])} | {setup} | {r['note']} |")
    return "\n".join(lines)


def targets(rows: list[dict], k: int) -> str:
    syn = [r for r in rows if r["workload"] == "synthetic"]
    get = lambda N, prefix: next((r for r in syn if r["N"] == N and r["method"].startswith(prefix)), None)  # noqa: E731
    lines = ["| target | measured | met |", "|:--|:--|:--|"]
    for N in sorted({r["N"] for r in syn}):
        one, bank, peft = get(N, "dense, one"), get(N, "bank"), get(N, "PEFT mixed batch, r=" + str(k))
        if bank is None or peft is None or one is None:
            continue
        if N == 100:
            ratio = bank["rows_per_s"] / one["rows_per_s"]
            lines.append(f"| N = 100: bank throughput ≥ 0.5× one dense model's | {ratio:.2f}× "
                         f"({bank['rows_per_s']:,.0f} / {one['rows_per_s']:,.0f} rows/s) | {'yes' if ratio >= 0.5 else 'no'} |")
            extra_b, extra_p = bank["seconds"] - one["seconds"], peft["seconds"] - one["seconds"]
            frac = extra_b / extra_p if extra_p > 0 else float("inf")
            lines.append(f"| N = 100: bank's time above one dense model ≤ 1/5 of PEFT's (r = k) | "
                         f"{extra_b * 1e3:.0f} ms vs {extra_p * 1e3:.0f} ms = {frac:.3f} | {'yes' if frac <= 0.2 else 'no'} |")
        if N == 1000:
            speed = peft["seconds"] / bank["seconds"]
            lines.append(f"| N = 1000: bank ≥ 5× faster than PEFT's mixed batch (r = k) | {speed:.1f}× | "
                         f"{'yes' if speed >= 5 else 'no'} |")
            lines.append(f"| N = 1000: PEFT's set-up vs the bank's load | {peft['setup_s']:.1f} s vs "
                         f"{bank['setup_s']:.2f} s | (reported) |")
            ratio = bank["MB"] / one["MB"]
            lines.append(f"| N = 1000: the bank's memory (biases included) ≤ 2.5× one model | {bank['MB']:,.0f} MB / "
                         f"{one['MB']:,.0f} MB = {ratio:.2f}× (1000 dense models: 1000×) | {'yes' if ratio <= 2.5 else 'no'} |")
    return "\n".join(lines)


def compact(rows: list[dict]) -> str:
    """docs/results.md's table: the synthetic rows, throughput against the dense floor."""
    syn = [r for r in rows if r["workload"] == "synthetic"]
    floor = {r["N"]: r for r in syn if r["method"] == "dense, one model"}
    lines = ["| N | distinct in batch | method | rows/s | vs one dense model | tensor MB | set-up s |",
             "|--:|--:|:--|--:|--:|--:|--:|"]
    for r in syn:
        if r["method"] == "dense, one model" and r["N"] != min(floor):
            continue
        ratio = r["rows_per_s"] / floor[r["N"]]["rows_per_s"]
        rps = "not run" if r["rows_per_s"] != r["rows_per_s"] else f"{r['rows_per_s']:,.0f}"
        rel = "" if ratio != ratio else f"{ratio:.2f}×"
        setup = "" if r["setup_s"] is None else f"{r['setup_s']:.2f}"
        lines.append(f"| {r['N']} | {r['distinct']} | {r['method']} | {rps} | {rel} | {mb(r['MB'])} | {setup} |")
    return "\n".join(lines)


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    t = pd.DataFrame([r for r in rows if r["workload"] == "synthetic"])
    t["kind"] = t["method"].str.replace(r" \(.*\)", "", regex=True)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    one = t[t.method == "dense, one model"].median(numeric_only=True)
    runs = t[t.method != "dense, one model"].dropna(subset=["rows_per_s"])
    palette = dict(zip(sorted(runs.kind.unique()), sns.color_palette("colorblind", runs.kind.nunique())))
    sns.lineplot(data=runs, x="N", y="rows_per_s", hue="kind", marker="o", ax=axes[0], palette=palette)
    axes[0].axhline(one.rows_per_s, color="grey", ls="--", label="one dense model on every row (floor)")
    axes[0].set(xscale="log", yscale="log", xlabel="models N (each row a random one of them)",
                ylabel="throughput (rows / s)", title=f"throughput, batches of {round(one.rows_per_s * one.seconds)} rows")
    axes[0].legend(fontsize=8)
    mem = t[t.method != "dense, one model"]
    sns.lineplot(data=mem, x="N", y="MB", hue="kind", marker="o", ax=axes[1], palette=palette, legend=False)
    axes[1].axhline(one.MB, color="grey", ls="--")
    axes[1].set(xscale="log", yscale="log", xlabel="models N", ylabel="tensor memory (MB)",
                title="memory held (dense beyond RAM: computed)")
    fig.suptitle("Serving N ViT-B-shaped models (synthetic layer stacks): bank vs dense copies vs PEFT mixed batch")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", type=int, nargs="+", default=[1, 10, 100, 1000])
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--rows", type=int, default=1024)
    ap.add_argument("--rows-real", type=int, default=512)
    ap.add_argument("--k", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peft-bytes-max-n", type=int, default=100,
                    help="largest N with the equal-bytes PEFT variant (its set-up grows as N²)")
    ap.add_argument("--dense-limit-gb", type=float, default=8.0)
    ap.add_argument("--zoo", type=Path, default=None)
    ap.add_argument("--realism", type=Path, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse-synthetic", action="store_true",
                    help="take the synthetic rows from the last run (bench/work/), measure the collections only")
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    log = lambda r: print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)  # noqa: E731
    for folder in (args.zoo, args.realism):
        if folder and not [p for p in (folder / "bank" / "delta").glob("k*") if p.is_dir()]:
            sys.exit(f"{folder}: no delta bank (run the workflow with this code first: the bank rule writes it)")
    saved = ROOT / "bench" / "work" / f"inference-synthetic-{device.type}.json"
    if args.reuse_synthetic and saved.exists():
        rows = json.loads(saved.read_text())
        print(f"synthetic rows reused from {saved}")
    else:
        rows = synthetic(args, device, log)
        saved.parent.mkdir(exist_ok=True)
        saved.write_text(json.dumps(rows))
    if args.zoo:
        rows += collection(args, "zoo", args.zoo, device, log)
    if args.realism:
        rows += collection(args, "text", args.realism, device, log)
    body = table(rows) + "\n\n" + targets(rows, args.k)
    print(body)
    if args.write:
        sys.path.insert(0, str(ROOT / "bench"))
        from report import write_section

        cuda = " (cuda)" if device.type == "cuda" else ""
        cmd = "python bench/inference.py " + " ".join(sys.argv[1:])
        write_section("Serving a collection" + cuda, cmd, body + "\n\n" + NOTES)
        if not cuda:
            figure(rows, ROOT / "docs" / "figures" / "bank_inference.png")
            results = ROOT / "docs" / "results.md"
            text = re.sub(r"(<!-- serving:start -->\n).*?(<!-- serving:end -->)",
                          lambda m: m[1] + compact(rows) + "\n" + m[2], results.read_text(), flags=re.S)
            results.write_text(text)


NOTES = """Rows of a batch are single vectors (synthetic), digits (zoo) or texts of ≤ 48 tokens
(realism); each row's model is drawn at random among N, so "distinct in batch" is how many models
the batch really mixes. Tensor MB counts every parameter and buffer a method holds (shared
storage once): for N dense models beyond 8 GiB it is computed, not run. Set-up: building the
dense models, adding N adapters to PEFT (``add_adapter`` / ``load_adapter``) and writing their
weights, loading the bank file and attaching it."""


if __name__ == "__main__":
    main()
