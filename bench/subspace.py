"""Benchmarks of the subspace and extract stages on synthetic collections written to Zarr.

Prints a markdown table and writes it, with the machine and the command, to BENCHMARKS.md.

    .venv/bin/python bench/subspace.py [--quick] [--device cuda] [--vit500]

With ``--device cuda`` the stage and tucker run on the GPU (its own section of BENCHMARKS.md);
``--vit500`` adds item 6: the stage on 500 models of a ViT-B's three matrix shapes (10.6 GB).

1. the subspace stage vs tensorly.tucker(init='svd', n_iter_max=0, pytorch backend) on the same
   stack: wall ratio, peak RSS ratio, largest principal angle between the two row subspaces;
2. peak RSS of the subspace stage as N grows (same layer shape);
3. subspace stage wall vs a plain read of the same Zarr data;
4. extract wall vs a plain copy of the safetensors files (ViT-B-shaped models; single tensors);
5. `snakemake -n` on a 1000-model collection.
Each measurement runs in its own process, so peak RSS (ru_maxrss) is that of the step alone.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEVICE = os.environ.setdefault("WS_BENCH_DEVICE", "cpu")  # read by the child processes
THREADS = 2  # the CPU figures: the 2-core machine; a GPU machine's run uses all its cores
WORK = ROOT / "bench" / "work" / "subspace"


def child(code: str, *args) -> tuple[float, float, str]:
    """Run python code in a fresh process: (seconds of its work, peak RSS MB, stdout).

    The code sets T0 after its imports; the time is that of the work alone, not of starting
    Python and importing torch (which every Snakemake job pays once, ~1 s here)."""
    code = "import time\n" + code.replace("\nT0\n", "\nT0 = time.perf_counter()\n") + "\nprint(time.perf_counter() - T0)\n"
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=out, stderr=err,
                                text=True, env={**os.environ, "OMP_NUM_THREADS": str(THREADS)})
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage: its peak RSS
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    if status != 0:
        sys.exit(f"benchmark step failed:\n{stderr[-3000:]}")
    return float(stdout.strip().splitlines()[-1]), usage.ru_maxrss / 1024, stdout


WRITE = """
import sys, torch
from weightspace.store import write_store
from safetensors.torch import save_file
root, N, m, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
T0
shared = torch.Generator().manual_seed(0)
base = torch.randn(m, n, generator=shared)
P, Q = torch.randn(m, 8, generator=shared), torch.randn(8, n, generator=shared)
for i in range(N):
    g = torch.Generator().manual_seed(i + 1)
    W = base + P @ torch.diag(torch.randn(8, generator=g)) @ Q / 8 + 0.05 * torch.randn(m, n, generator=g)
    write_store(f"{root}/m{i:04d}.zarr", [("layer.weight", W)], {"model": f"m{i:04d}"})
    if i < 20:
        save_file({"layer.weight": W}, f"{root}/m{i:04d}.safetensors")
"""

STAGE = """
import sys, glob, os, torch
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
from weightspace.subspace import run_group, load_subspaces
paths = sorted(glob.glob(sys.argv[1] + "/m[0-9][0-9][0-9][0-9].zarr"))[: int(sys.argv[2])]
precision, method = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else ("float64", "auto")
device = os.environ["WS_BENCH_DEVICE"]
T0
run_group(paths, "full", 1, 0, sys.argv[3], max_k=64, center=True, gaussian_null=False,
          rotation_null=False, seed=0, device=device, precision=precision,
          sketch_when_cheaper=method == "auto")
if device == "cuda":
    torch.cuda.synchronize()
    print("GPU_MB", torch.cuda.max_memory_allocated() / 2**20)
"""

TUCKER = """
import sys, glob, os, numpy as np, torch, tensorly as tl
from tensorly.decomposition import tucker
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
tl.set_backend("pytorch")
from weightspace.store import ModelStore
paths = sorted(glob.glob(sys.argv[1] + "/m[0-9][0-9][0-9][0-9].zarr"))[: int(sys.argv[2])]
T0
X = torch.stack([ModelStore(p).read("layer.weight").float() for p in paths]).to(os.environ["WS_BENCH_DEVICE"])
X -= X.mean(0)
core, factors = tucker(X, rank=[X.shape[0], 64, 64], init="svd", n_iter_max=0)
np.save(sys.argv[3], factors[1].cpu().numpy())
"""

REFERENCE = """
import sys, glob, numpy as np
from weightspace.store import ModelStore
paths = sorted(glob.glob(sys.argv[1] + "/m[0-9][0-9][0-9][0-9].zarr"))[: int(sys.argv[2])]
T0
X = np.stack([np.asarray(ModelStore(p).group["layer.weight"][...], dtype=np.float64) for p in paths])
X -= X.mean(0)
u = np.linalg.svd(X.transpose(1, 0, 2).reshape(X.shape[1], -1), full_matrices=False)[0]
np.save(sys.argv[3], u[:, :8])
Xc = X.transpose(2, 0, 1).reshape(X.shape[2], -1)  # column unfolding: its SVD is slow, so eigh of its Gram
lam, v = np.linalg.eigh(Xc @ Xc.T)
np.save(sys.argv[3].replace(".npy", "_col.npy"), v[:, ::-1][:, :8])
"""

GEMM = """
import os, torch
torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
a = torch.randn(2048, 2048, dtype=torch.float64, device=os.environ["WS_BENCH_DEVICE"])
a @ a
T0
for _ in range(3):
    b = a @ a
float(b[0, 0])  # waits for the device
T0 = time.perf_counter() - (time.perf_counter() - T0) / 3  # one product's time
"""

READ = """
import sys, glob, numpy as np
from weightspace.store import ModelStore
T0
for p in sorted(glob.glob(sys.argv[1] + "/m[0-9][0-9][0-9][0-9].zarr"))[: int(sys.argv[2])]:
    st = ModelStore(p)
    for name in st.names():
        np.asarray(st.group[name][...])
"""

VIT_STACK = """
import sys, torch
from weightspace.store import write_store
root, N = sys.argv[1], int(sys.argv[2])
T0
shapes = {"attention.query.weight": (768, 768), "intermediate.dense.weight": (3072, 768),
          "output.dense.weight": (768, 3072)}  # a ViT-B layer's three matrix shapes
shared = torch.Generator().manual_seed(0)
base = {k: torch.randn(s, generator=shared) * 0.02 for k, s in shapes.items()}
for i in range(N):
    g = torch.Generator().manual_seed(i + 1)
    write_store(f"{root}/m{i:04d}.zarr", [(k, b + 0.002 * torch.randn(b.shape, generator=g)) for k, b in base.items()],
                {"model": f"m{i:04d}"})
"""

EXTRACT = """
import sys, glob
from weightspace.extract import extract_model
import os, shutil
files = sorted(glob.glob(sys.argv[1] + "/m*.safetensors"))
for p in files:
    d = p[:-12] + "_folder"; os.makedirs(d, exist_ok=True); shutil.copy(p, d + "/model.safetensors")
    shutil.rmtree(p[:-12] + "_x.zarr", ignore_errors=True)  # a first extraction, as in a run
os.sync()  # no dirty pages of earlier steps slowing this one's writes
T0
for p in files:
    extract_model(p[:-12] + "_folder", p[:-12] + "_x.zarr", "x", {})
"""

VIT_B = """
import sys, os, torch
from safetensors.torch import save_file
T0
shapes = {"embeddings.cls_token": (1, 1, 768), "embeddings.position_embeddings": (1, 197, 768),
          "embeddings.patch_embeddings.projection.weight": (768, 3, 16, 16),
          "embeddings.patch_embeddings.projection.bias": (768,), "layernorm.weight": (768,),
          "layernorm.bias": (768,), "classifier.weight": (1000, 768), "classifier.bias": (1000,)}
for i in range(12):  # the tensors of google/vit-base-patch16-224 (transformers names)
    p = f"encoder.layer.{i}."
    for name in ("attention.attention.query", "attention.attention.key", "attention.attention.value",
                 "attention.output.dense"):
        shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (768, 768), (768,)
    shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (3072, 768), (3072,)
    shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (768, 3072), (768,)
    for ln in ("layernorm_before", "layernorm_after"):
        shapes[p + ln + ".weight"], shapes[p + ln + ".bias"] = (768,), (768,)
g = torch.Generator().manual_seed(0)
for k in range(int(sys.argv[2])):
    os.makedirs(f"{sys.argv[1]}/v{k}", exist_ok=True)
    save_file({n: torch.randn(s, generator=g) for n, s in shapes.items()}, f"{sys.argv[1]}/v{k}/model.safetensors")
print(len(shapes), sum(torch.Size(s).numel() for s in shapes.values()))
"""

VIT_STEP = """
import sys, glob, os, shutil
from weightspace.extract import extract_model
folders, extract = sorted(glob.glob(sys.argv[1] + "/v*[0-9]")), sys.argv[2] == "extract"
out = lambda f: f + (".zarr" if extract else "_copy")
for f in folders:
    shutil.rmtree(out(f), ignore_errors=True)
os.sync()  # no dirty pages of earlier steps slowing this one's writes
T0
for f in folders:
    if extract:
        extract_model(f, out(f), os.path.basename(f), {})
    else:
        os.makedirs(out(f)); shutil.copy(f + "/model.safetensors", out(f) + "/model.safetensors")
"""

HUGE = """
import sys, torch
from safetensors.torch import save_file
import os
T0
os.makedirs(sys.argv[1], exist_ok=True)
save_file({"embed.weight": torch.randn(65536, 4096)}, sys.argv[1] + "/model.safetensors")  # 1 GiB
"""

EXTRACT_HUGE = """
import sys
from weightspace.extract import extract_model
T0
extract_model(sys.argv[1], sys.argv[1] + ".zarr", "huge", {})
"""

COPY = """
import sys, glob, shutil, os
for p in sorted(glob.glob(sys.argv[1] + "/m*.safetensors")):
    shutil.rmtree(p[:-12] + "_copy", ignore_errors=True)
os.sync()
T0
for p in sorted(glob.glob(sys.argv[1] + "/m*.safetensors")):
    d = p[:-12] + "_copy"; os.makedirs(d, exist_ok=True); shutil.copy(p, d + "/model.safetensors")
"""


def principal_angle_deg(a, b) -> float:
    import numpy as np

    s = np.linalg.svd(a.T @ b, compute_uv=False)
    return float(np.degrees(np.arccos(np.clip(s.min(), -1, 1))))


def gpu_mb(stdout: str) -> float:
    return float(next(line.split()[1] for line in stdout.splitlines() if line.startswith("GPU_MB")))


def collection_with(code: str, name: str, *args) -> Path:
    d = WORK / name
    if not (d / "done").exists():
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        child(code, d, *args)
        (d / "done").write_text("")
    return d


def collection(name, N, m, n):
    return collection_with(WRITE, name, N, m, n)


def dry_run_1000() -> float:
    d = WORK / "dag1000"
    shutil.rmtree(d, ignore_errors=True)
    from safetensors.torch import save_file
    import torch
    for i in range(1000):
        f = d / "models" / f"m{i:04d}"
        f.mkdir(parents=True)
        save_file({"w": torch.zeros(4, 4)}, str(f / "model.safetensors"))
    cfg = {"collections": {"big": {"source": "local", "path": str(d / "models"), "evaluator": "none"}},
           "subspace": {"layer_groups": 8}}
    (d / "config.yaml").write_text(json.dumps(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(d),
           "--configfile", str(d / "config.yaml"), "--cores", "2", "--quiet"]
    subprocess.run(cmd, check=True, capture_output=True)  # first: writes the lock
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller shapes, for a smoke test")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--vit500", action="store_true", help="item 6: 500 models of a ViT-B's matrix shapes")
    a = ap.parse_args()
    global DEVICE, THREADS
    DEVICE = os.environ["WS_BENCH_DEVICE"] = a.device
    THREADS = 2 if a.device == "cpu" else os.cpu_count()
    m, n, N = (192, 768, 40) if a.quick else (768, 3072, 100)
    sm, sn = (96, 384) if a.quick else (384, 1536)
    Ns = (20, 40, 80) if a.quick else (50, 200, 800)
    rows = []
    d = collection(f"main-{N}x{m}x{n}", N, m, n)
    w_stage, rss_stage, out64 = child(STAGE, d, N, d / "out.zarr")
    w_stage32, rss_stage32, out32 = child(STAGE, d, N, d / "out32.zarr", "float32", "auto")
    w_exact, rss_exact, _ = child(STAGE, d, N, d / "exact.zarr", "float64", "exact")
    w_tucker, rss_tucker, _ = child(TUCKER, d, N, d / "tucker.npy")
    from weightspace.subspace import load_subspaces
    import numpy as np

    def stage_result(name):  # the leading row and column directions (k=8, the planted rank)
        rec = load_subspaces([str(d / name)])[0]["layer.weight"]
        return rec.U_row.numpy()[:, :8], rec.U_col.numpy()[:, :8], rec.attrs["methods"]

    U, V, methods = stage_result("out.zarr")
    T = np.load(d / "tucker.npy")[:, :8]  # the planted rank: beyond it directions are noise
    child(REFERENCE, d, N, d / "reference.npy")
    R = np.load(d / "reference.npy")  # float64 numpy SVD of the row unfolding
    Rc = np.load(d / "reference_col.npy")  # float64 numpy eigh of the column unfolding's Gram
    U32, V32, _ = stage_result("out32.zarr")
    Ue, Ve, methods_exact = stage_result("exact.zarr")
    ang = lambda A, B: f"row {principal_angle_deg(A, R):.1e}, col {principal_angle_deg(B, Rc):.1e} deg"  # noqa: E731
    rows.append((f"1. subspace stage vs tensorly.tucker, N={N}, {m}x{n} float32, max_k=64 (default: "
                 f"float64 products; row mode {methods['row']}, col mode {methods['col']})",
                 f"{w_stage:.1f} s / {w_tucker:.1f} s = {w_tucker / w_stage:.1f}x faster; "
                 f"peak RSS {rss_stage:.0f} / {rss_tucker:.0f} MB; largest principal angle (k=8) to a "
                 f"float64 SVD of each unfolding: stage {ang(U, V)}; tucker row "
                 f"{principal_angle_deg(T, R):.1e} deg", "≥10x faster, same subspace"))
    if DEVICE == "cuda":
        rows[-1] = (rows[-1][0], rows[-1][1] + f"; GPU peak {gpu_mb(out64):.0f} MB", rows[-1][2])
    rows.append(("1b. the same with float32 products (precision: float32)",
                 f"{w_stage32:.1f} s / {w_tucker:.1f} s = {w_tucker / w_stage32:.1f}x faster; peak RSS "
                 f"{rss_stage32:.0f} MB; angle to the float64 SVD: {ang(U32, V32)}",
                 "≥10x faster, same subspace"))
    rows.append((f"1c. the same with exact Grams in both modes (what the rotation null needs; "
                 f"col mode {methods_exact['col']})",
                 f"{w_exact:.1f} s / {w_tucker:.1f} s = {w_tucker / w_exact:.1f}x faster; peak RSS "
                 f"{rss_exact:.0f} MB; angle to the float64 SVD: {ang(Ue, Ve)}", "(reference)"))
    from weightspace.subspace import memory_estimate_mb

    rss, est = [], []
    for k in Ns:
        dk = collection(f"rss-{k}x{sm}x{sn}", k, sm, sn)
        rss.append(child(STAGE, dk, k, dk / "out.zarr")[1])
        est.append(memory_estimate_mb(str(dk / "m0000.zarr"), "full", 1, 0, k, max_k=64,
                                      gaussian_null=False, rotation_null=False))
    rows.append((f"2. subspace peak RSS at N={', '.join(map(str, Ns))}, {sm}x{sn}",
                 " / ".join(f"{r:.0f} MB" for r in rss) + f" (max/min {max(rss) / min(rss):.2f}); "
                 "the rule's mem_mb estimate: " + " / ".join(f"{e} MB" for e in est), "flat, ≤1.3x"))
    est_main = memory_estimate_mb(str(d / "m0000.zarr"), "full", 1, 0, N, max_k=64, gaussian_null=False,
                                  rotation_null=False)
    rows[0] = (rows[0][0], rows[0][1] + f"; the rule's mem_mb estimate {est_main} MB", rows[0][2])
    w_read, _, _ = child(READ, d, N)
    # the multiply-adds of the default stage: exact row Gram (lower block triangle, 5/8 of m²n),
    # column sketch and its refinement (2·m·n·l each), model Gram (5/8 of N²·m·n); at this
    # CPU's float64 GEMM speed they take at least this long, whatever the implementation
    l = 2 * 64 + 1
    flops = N * m * m * n * 5 / 8 + N * 4 * m * n * l + N * N * m * n * 5 / 8
    gemm_s = child(GEMM)[0]
    floor = flops * gemm_s / 2048 ** 3
    rows.append((f"3. subspace stage vs plain read, N={N}, {m}x{n}",
                 f"{w_stage:.1f} s / {w_read:.1f} s = {w_stage / w_read:.1f}x (float32 products: "
                 f"{w_stage32 / w_read:.1f}x); compute floor: its {flops:.1e} multiply-adds at this "
                 f"{DEVICE}'s float64 GEMM speed ({2048 ** 3 / gemm_s / 1e9:.0f} G/s, {THREADS} threads) take "
                 f"{floor:.1f} s = {floor / w_read:.1f}x the read", "≤1.5x"))
    def best_pair(a, args_a, b, args_b):  # alternating, five times each: the disk's write-back
        wa, wb = [], []  # varies from run to run by up to 5×, so the best of each (as timeit)
        for _ in range(5):
            wa.append(child(a, *args_a)[0])
            wb.append(child(b, *args_b)[0])
        return min(wa), min(wb), f"range {min(wa):.2f}–{max(wa):.2f} s / {min(wb):.2f}–{max(wb):.2f} s"

    n_vit = 2 if a.quick else 4
    dv = WORK / f"vit-{n_vit}"
    if not (dv / "done").exists():
        shutil.rmtree(dv, ignore_errors=True)
        dv.mkdir(parents=True)
        info = child(VIT_B, dv, n_vit)[2].split()
        (dv / "done").write_text(f"{info[0]} {info[1]}")
    n_tensors, n_params = map(int, (dv / "done").read_text().split())
    w_ex, w_cp, spread = best_pair(VIT_STEP, (dv, "extract"), VIT_STEP, (dv, "copy"))
    rows.append((f"4. extract vs plain copy, {n_vit} ViT-B-shaped models ({n_tensors} tensors, "
                 f"{n_params * 4 / 2**20:.0f} MiB float32 each; best of 5, page cache warm, written "
                 "after a sync)", f"{w_ex:.2f} s / {w_cp:.2f} s = {w_ex / w_cp:.1f}x ({spread})", "≤2x"))
    w_ex, w_cp, spread = best_pair(EXTRACT, (d,), COPY, (d,))
    rows.append((f"4b. the same, 20 single-tensor models {m}x{n}", f"{w_ex:.2f} s / {w_cp:.2f} s = "
                 f"{w_ex / w_cp:.1f}x ({spread})", "≤2x"))
    child(HUGE, d / "huge")
    w_huge, rss_huge, _ = child(EXTRACT_HUGE, d / "huge")
    rss_imports = child("import torch, zarr, weightspace.extract\nT0\n")[1]
    rows.append(("4c. extract of one 1 GiB tensor (65536x4096 float32), copied in row blocks",
                 f"{w_huge:.1f} s, peak RSS {rss_huge:.0f} MB (the imports alone: {rss_imports:.0f} MB)",
                 "bounded by a few 64 MB blocks"))
    rows.append(("5. snakemake -n, 1000-model collection", f"{dry_run_1000():.1f} s", "≤15 s"))
    if a.vit500:
        N6 = 40 if a.quick else 500
        d6 = collection_with(VIT_STACK, f"vit-stack-{N6}", N6)
        w6, rss6, out6 = child(STAGE, d6, N6, d6 / "out.zarr")
        w6_read = child(READ, d6, N6)[0]
        gb = N6 * (768 * 768 + 2 * 3072 * 768) * 4 / 1e9
        rows.append((f"6. the stage on {N6} models of a ViT-B layer's three matrices (768x768, 3072x768, "
                     f"768x3072 float32: {gb:.1f} GB), max_k=64, on {DEVICE}",
                     f"{w6:.1f} s, plain read {w6_read:.1f} s = {w6 / w6_read:.1f}x; peak RSS {rss6:.0f} MB"
                     + (f", GPU peak {gpu_mb(out6):.0f} MB" if DEVICE == "cuda" else ""), "(on a GPU)"))
    table = ["| benchmark | measured | target |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    print("\n".join(table))
    if not a.quick:
        sys.path.insert(0, str(ROOT / "bench"))
        from report import write_section
        flags = "".join(f" --{f}" for f, on in (("device cuda", DEVICE == "cuda"), ("vit500", a.vit500)) if on)
        title = "Subspace and extract stages" + (f" ({DEVICE})" if DEVICE != "cpu" else "")
        write_section(title, ".venv/bin/python bench/subspace.py" + flags, "\n".join(table))


if __name__ == "__main__":
    main()
