"""The subspace stage: stream basis models' matrices, decompose, write, read back.

One job handles one layer group of one view: the view's targets (sorted by name) dealt
round-robin into ``n_groups`` groups, so the DAG is known before any weight is read. For each
target the job streams every basis model's matrix once into the additive sums of
:class:`weightspace.core.hosvd.ModeSums`, reads row blocks once more for the model-mode Gram
(dense targets), eigendecomposes and writes one Zarr group per target into the job's own
store (one writer per store). Memory: one model's matrix, the sums and a row block.
"""

from __future__ import annotations

import logging
import os
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import zarr
from tqdm import tqdm

from . import layers
from .core import hosvd
from .core.lowrank import LowRank
from .core import sharing, stats
from .io import atomic_path
from .spectra import stored_targets
from .store import ModelStore
from .stream import model_gram_dense, prefetched, to_device

log = logging.getLogger("weightspace")
BLOCK_BYTES = 128 << 20  # the row block of every model read at once for the model Gram


class ArchitectureError(ValueError):
    """A model whose targets do not match the collection's reference model."""


def group_targets(store: ModelStore, view: str, n_groups: int, group: int) -> list[layers.Target]:
    """Targets of layer group ``group`` of ``n_groups``: every n_groups-th target by name."""
    all_targets = sorted(layers.targets(store, view), key=lambda t: t.name)
    return all_targets[group::n_groups]


def check_same_targets(ref: ModelStore, other: ModelStore, view: str) -> None:
    a = {t.name: t.shape for t in layers.targets(ref, view)}
    b = {t.name: t.shape for t in layers.targets(other, view)}
    if a != b:
        missing = sorted(set(a) - set(b))
        extra = sorted(set(b) - set(a))
        shapes = sorted(n for n in set(a) & set(b) if a[n] != b[n])
        raise ArchitectureError(
            f"model {other.key} does not match reference model {ref.key} in view {view}: "
            f"missing {missing[:5]}, extra {extra[:5]}, different shapes {shapes[:5]}")


def identity(store: ModelStore) -> str:
    """What makes a model's contribution to the sums reusable: its key, pinned revision and the
    digest of its files (a zoo or local model retrained under the same key and revision is a
    new model, not a cached one)."""
    return f"{store.key}@{store.attrs.get('revision') or ''}#{store.attrs.get('content') or ''}"


def _model_seed(store: ModelStore) -> int:
    return zlib.crc32(store.key.encode())


@dataclass
class Cached:
    """The additive sums and raw model Gram of the models already seen, for one target."""

    models: list[str]
    sums: hosvd.ModeSums
    K: torch.Tensor
    null: hosvd.ModeSums | None = None  # unit-variance Gaussian draws, one per model
    svals: torch.Tensor | None = None   # N × r singular values of each model (rotation null)
    gram: GramSketch | None = None      # model_gram "sketch": what new × old Gram entries come from
    null_grams: dict[str, torch.Tensor] | None = None  # per mode, the rotation null's L × dim × dim Grams
    null_seed: int | None = None        # the seed they were drawn with


@dataclass
class GramSketch:
    """Per model, the count sketch z_i of W_i − R (``hosvd.add_hashed_sketch``, width w) and
    r_i = ⟨W_i, R⟩ exact, for one reference R: the basis mean when the sketches began. The Gram
    of a new model with the old ones is then ``hosvd.sketched_gram`` of their sketches: adding
    models reads only the new models. K's entries among the first models stay exact."""

    ref: torch.Tensor      # R (m×n, float64)
    ref_sq: float          # ‖R‖²
    Z: torch.Tensor        # N × w sketches
    r: torch.Tensor        # N
    seed: int


STOP_AFTER = 10  # a matrix's rotation null stops once this many draws reach its statistic (Besag & Clifford)
NULL_CACHE_BYTES = 128 << 20  # a target's null Grams (R draws × dim² per wide mode) are cached up to this size


def null_grams_kept(draws: int, dims: list[int]) -> int:
    """Bytes of a target's rotation-null Grams (float64, R draws × d² per exact mode) when they
    fit ``NULL_CACHE_BYTES`` (kept for the cache), else 0 (not kept)."""
    size = 8 * draws * sum(d * d for d in dims)
    return size if size <= NULL_CACHE_BYTES else 0


def rotation_test(svals: torch.Tensor, models: list[str], sub: hosvd.Subspace, shape: tuple[int, int],
                  exact: dict[str, bool], draws: int, K: int, seed: int, name: str,
                  stop_after: int | None = None, grams: dict[str, torch.Tensor] | None = None,
                  cached: int = 0) -> dict:
    """The sharing statistic of one target and its rotation null (``core.sharing``): up to R
    draws per exact mode from the models' singular values (``svals``, N × r, zero-padded),
    each model's frames drawn from its own key (seed, target, mode, the model's name in
    ``models``), so a model's contribution to a draw does not depend on the others and an
    added model adds its own; stopped once ``stop_after`` (default ``STOP_AFTER``) draws reach the data's statistic
    (``sharing.sequential_null``: a valid p-value, h/l; a matrix far above its null uses all R).
    ``grams``: per mode, the null Grams of the first ``cached`` models from an earlier run
    (``Cached.null_grams``), to which only the other models are added.
    Returns the statistic of the data and of every draw per mode, the mean null spectrum per
    mode, the draws used, the power ceiling (the excess N identical copies of a matrix with the
    models' mean normalised spectrum would show, ``sharing.ceiling_area``), and the Grams to
    cache (``"grams"``, where they fit ``NULL_CACHE_BYTES``). p-values are taken later
    (``sharing_table``), where the margin and the FDR are set."""
    stop_after = STOP_AFTER if stop_after is None else stop_after
    svals = svals.to(torch.float64)
    s = [row[row > 0] for row in svals]  # each model's own singular values
    base = seed * 1_000_003 + zlib.crc32(name.encode())
    g_ceiling = torch.Generator().manual_seed((base + 1) % (2**63))
    nulls, modes, t_data, null_modes, ceiling = {}, [], [], [], []
    S = svals ** 2
    typical = (S / S.sum(1, keepdim=True).clamp_min(1e-300)).mean(0)  # the models' mean normalised spectrum
    for mode, dim, eig in (("row", shape[0], sub.eig_row_uncentered), ("col", shape[1], sub.eig_col_uncentered)):
        if not exact[mode]:
            continue
        modes.append(mode)
        gram = (grams or {}).get(mode)
        null_modes.append(sharing.NullMode(dim, [sharing.philox_key(seed, name, mode, m) for m in models],
                                           gram, cached if gram is not None else 0))
        t_data.append(float(sharing.evr_area(eig, K, sub.total_uncentered)))
        ceiling.append(sharing.ceiling_area(typical, len(s), K, dim, CEILING_DRAWS, g_ceiling))
    if not modes:
        return {"nulls": nulls, "test": None, "grams": {}}
    keep = null_grams_kept(draws, [m.dim for m in null_modes]) > 0
    eigs, areas, kept = sharing.sequential_null(s, null_modes, K, sub.total_uncentered, float(np.mean(t_data)),
                                                draws, stop_after, keep)
    for mode, lam in zip(modes, eigs):
        nulls[f"rotation_{mode}"] = lam.mean(0)  # the expected null spectrum: its EVR is the mean EVR
    nulls["rotation_statistic"] = areas  # l × modes, l ≤ R draws
    return {"nulls": nulls, "test": {"statistic": float(np.mean(t_data)), "mode_statistic": t_data,
                                     "modes": modes, "draws": len(areas), "max_draws": draws,
                                     "stop_after": stop_after, "K": K,
                                     "ceiling": float(np.mean(ceiling)), "mode_ceiling": ceiling},
            "grams": {mode: G for mode, G in zip(modes, kept) if G is not None}}


CEILING_DRAWS = 8  # rotation-null draws behind a matrix's power ceiling (``sharing.ceiling_area``)


SKETCH_GAIN = 6  # a mode at least this many sketch widths wide is cheaper sketched than exact


def sketch_sizes(m: int, n: int, max_k: int, exact_max_dim: int, when_cheaper: bool = False,
                 rotation_null: bool = True) -> tuple[int, int]:
    """Sketch width per mode: 0 (exact Gram) or l = 2·k_max + 1.

    A mode larger than ``exact_max_dim`` is always sketched. With ``when_cheaper`` and no
    rotation null (which needs full Grams), a column mode with n ≥ SKETCH_GAIN·l is sketched
    too: its two passes cost ~4·m·n·l multiply-adds per model against m·n² for the n×n Gram
    (skinny products run at ~60% of a square one's speed, hence 6 rather than 4). The row
    mode is exact up to ``exact_max_dim``: its sketch gets one pass only (see hosvd).
    """
    l = 2 * max_k + 1
    cheaper = when_cheaper and not rotation_null and n >= SKETCH_GAIN * l
    row = l if m > exact_max_dim and l < m else 0
    col = l if l < n and (n > exact_max_dim or cheaper) else 0
    return row, col


def aligned_block_rows(budget_rows: int, chunk_rows: int) -> int:
    """Rows per block of the model-Gram pass: a whole number of stored chunks when the
    budget allows, else an even split of one chunk (a block never straddles two chunks, so
    each chunk is read ⌈chunk/budget⌉ times rather than once per overlapping block)."""
    budget_rows, chunk_rows = max(1, budget_rows), max(1, chunk_rows)
    if budget_rows >= chunk_rows:
        return budget_rows // chunk_rows * chunk_rows
    return -(-chunk_rows // -(-chunk_rows // budget_rows))


def mode_methods(m: int, n: int, sk_row: int, sk_col: int, refine: bool) -> dict[str, str]:
    """How each mode is computed, as written to the store and the log (``refine``: a sketched
    column mode gets the second pass)."""
    return {"row": f"one-pass Nyström sketch, width {sk_row}" if sk_row else f"exact {m}×{m} Gram",
            "col": (f"{'two' if refine else 'one'}-pass Nyström sketch, width {sk_col}" if sk_col
                    else f"exact {n}×{n} Gram")}


def decompose_target(stores: list[ModelStore], target: layers.Target, *, max_k: int, center: bool,
                     gaussian_null: bool, rotation_null: bool, seed: int, device: str,
                     cached: Cached | None = None, exact_max_dim: int = 8192,
                     precision: str = "float64", sketch_when_cheaper: bool = True,
                     null_draws: int = 99, test_k: int = 16, model_gram: str = "exact",
                     gram_sketch_width: int = 4096) -> tuple[hosvd.Subspace, Cached]:
    """The decomposition of one target over the given basis models (see hosvd), and with
    ``rotation_null`` the sharing test (``rotation_test``) on its exact modes.

    With ``cached`` sums of some of these models, only the others are read into the sums; the
    model Gram reuses the cached block and computes the cross terms with the new models.
    Returns the result and the updated cache (models in the order of the result).

    ``model_gram``: "exact" computes the Gram of new models with the cached ones from both
    (the old models are read again); "sketch" keeps a count sketch of every model (see
    ``GramSketch``), so an added model is read only once, and its Gram entries with the old
    models have an error of standard deviation ≤ √(2/w)·‖W_i − R‖‖W_j − R‖ (w =
    ``gram_sketch_width``). Dense views only (the delta view's factor Gram is already cheap).
    """
    m, n = target.shape
    sk_row, sk_col = sketch_sizes(m, n, max_k, exact_max_dim, sketch_when_cheaper, rotation_null)
    # the second pass refines a sketched column mode on centred blocks; the delta view's factor
    # Gram has no row-block pass
    refine_col = bool(sk_col) and center and target.view != "delta"
    methods = mode_methods(m, n, sk_row, sk_col, refine_col)
    log.info("%s %s: row mode %s; col mode %s%s", target.name, target.shape, methods["row"], methods["col"],
             "; no rotation null for a sketched mode" if rotation_null and (sk_row or sk_col) else "")
    new_sums = lambda: hosvd.ModeSums(m, n, device=device, sketch_row=sk_row, sketch_col=sk_col,  # noqa: E731
                                      sketch_seed=seed, product_dtype=getattr(torch, precision))
    if cached is not None and ((cached.sums.sketch_row, cached.sums.sketch_col) != (sk_row, sk_col)
                               or cached.sums.product_dtype != getattr(torch, precision)):
        cached = None  # made with other sketch widths or another precision
    ids = [identity(st) for st in stores]
    if cached is not None and set(cached.models) <= set(ids):
        order = [ids.index(i) for i in cached.models] + [k for k, i in enumerate(ids) if i not in set(cached.models)]
        stores, sums, known, null = [stores[k] for k in order], cached.sums, cached.K, cached.null
        svals = list(cached.svals) if cached.svals is not None else None
        log.info("%s: reusing the sums of %d models, reading %d new", target.name, len(cached.models),
                 len(stores) - len(cached.models))
    else:
        if cached is not None:
            log.info("%s: cached sums include models no longer in the basis; starting afresh", target.name)
        known = None
    if known is not None and gaussian_null and (null is None or null.count != known.shape[0]):
        log.info("%s: cached sums were made without the Gaussian null; starting afresh", target.name)
        known = None
    if known is not None and rotation_null and svals is None:
        log.info("%s: cached sums were made without the rotation null; starting afresh", target.name)
        known = None
    if known is None:
        sums = new_sums()
        null = new_sums() if gaussian_null else None
        svals = []
    elif not gaussian_null:
        null = None
    n_old = 0 if known is None else known.shape[0]
    mats = []
    # cached models are read only where the delta view's model Gram needs their factors
    todo = [(i, st) for i, st in enumerate(stores) if i >= n_old or target.view == "delta"]
    use_sketch = model_gram == "sketch" and target.view != "delta"
    gram = cached.gram if (use_sketch and cached is not None and known is not None) else None
    if gram is not None and (gram.Z.shape[1] != gram_sketch_width or gram.seed != seed or refine_col):
        gram = None  # another width or seed; or a column refinement, which reads every model anyway
    new_z, new_r, new_sq = [], [], []

    def load(item):  # in the prefetch thread: read in the source dtype, stay on the CPU
        return layers.read_target(item[1], target, dtype=layers.SOURCE_DTYPE)

    for (i, st), W in tqdm(zip(todo, prefetched(todo, load)), total=len(todo), desc=target.name,
                           mininterval=5):
        W = to_device(W, device)
        W = (LowRank(W.B.to(hosvd.ACC), W.A.to(hosvd.ACC), W.scale) if isinstance(W, LowRank)
             else W.to(hosvd.ACC))
        if i >= n_old:
            sums.add(W)
            if gram is not None:  # the new model's sketch and reference product, from this one read
                ref = gram.ref.to(W.device)
                z = torch.zeros(1, gram.Z.shape[1], dtype=hosvd.ACC, device=W.device)
                hosvd.add_hashed_sketch(z, (W - ref).reshape(1, -1), 0, gram.seed)
                new_z.append(z[0].cpu())
                new_r.append(float((W * ref).sum()))
                new_sq.append(float((W * W).sum()))
            if rotation_null:
                svals.append(sharing.lowrank_singular_values(W.B, W.A, W.scale) if isinstance(W, LowRank)
                             else sharing.singular_values(W))
            if null is not None:
                hosvd.add_gaussian(null, seed * 1_000_003 + _model_seed(st))
        if target.view == "delta":  # the factor Gram needs every model's (small) factors
            mats.append(W)
    if target.view == "delta":
        K = hosvd.model_gram_lowrank(mats, known)
    elif gram is not None and not new_z:  # no model added (a rerun with other settings)
        K = known.to(device)
    elif gram is not None:
        K, gram = sketched_model_gram(stores, target, known, gram, new_z, new_r, new_sq, device)
        methods["model"] = (f"exact Gram of the first {n_old} models; {len(stores) - n_old} added models' entries "
                            f"with them from count sketches of width {gram.Z.shape[1]}")
    else:
        read_rows, rows = row_block_reader(stores, target)
        refine = sums.refinement() if refine_col else None
        N = len(stores)
        Z = torch.zeros(N, gram_sketch_width, dtype=hosvd.ACC, device=device) if use_sketch else None
        R = sums.mean if use_sketch else None

        def on_block(rows, V):  # V: N × r × n, raw, or centred on the refinement's mean
            if Z is not None:
                shift = (refine.mean[rows] if refine else 0) - R[rows]
                hosvd.add_hashed_sketch(Z, (V + shift).reshape(N, -1), rows.start * n, seed)
            if refine:
                refine.add_rows(rows, V)

        K = model_gram_dense(read_rows, N, m, n, rows, device=device, known=known,
                             on_block=on_block if (refine or Z is not None) else None,
                             center=refine.mean if refine else None)
        if refine:
            refine.finish()
        if Z is not None:  # R is the mean of these N models: ⟨W_i, R⟩ = mean_j K_ij, ‖R‖² = mean K
            gram = GramSketch(R.cpu(), float(K.mean()), Z.cpu(), K.mean(1).cpu(), seed)
            methods["model"] = f"exact Gram; count sketches of width {gram_sketch_width} kept for added models"
    sub = hosvd.decompose(sums, K, max_k, center)
    sub.methods = methods
    ids = [identity(st) for st in stores]
    S = sharing.padded(svals) if rotation_null else None
    if rotation_null:
        reuse = known is not None and cached.null_grams and cached.null_seed == seed
        test = rotation_test(S, [st.key for st in stores], sub, (m, n), {"row": not sk_row, "col": not sk_col}, null_draws,
                             test_k, seed, target.name, grams=cached.null_grams if reuse else None,
                             cached=n_old)
        sub.nulls.update(test["nulls"])
        sub.sharing = test["test"]
    if null is not None:
        var = sub.total / (len(stores) * m * n)
        sub.nulls.update(hosvd.gaussian_null_spectra(null, var, center))
        sub.null_gaussian_total = var * null.total(center)
    return sub, Cached(ids, sums, K, null, S, gram, test["grams"] if rotation_null else None, seed)


def row_block_reader(stores: list[ModelStore], target: layers.Target):
    """(read_rows(i, rows, out), rows per block) of the model-Gram pass over these stores: a row
    block of the tensor is a row block of its matrix view; blocks sized to the read budget and
    aligned to the stored chunks."""
    n = target.shape[1]
    rows = aligned_block_rows(BLOCK_BYTES // (8 * n * len(stores)), stores[0].array(target.sources[0]).chunks[0])

    def read_rows(i, sl, out=None):
        return layers.as_matrix(stores[i].read(target.sources[0], sl, out=out))
    return read_rows, rows


def sketched_model_gram(stores: list[ModelStore], target: layers.Target, known: torch.Tensor, gram: GramSketch,
                        new_z: list, new_r: list, new_sq: list, device: str) -> tuple[torch.Tensor, GramSketch]:
    """The raw model Gram of cached + added models without reading the cached ones: their
    block as cached, the added models among themselves exact (a pass over them alone), added
    × cached from the sketches (``hosvd.sketched_gram``). Returns K and the grown sketches."""
    n_old, N = known.shape[0], len(stores)
    m, n = target.shape
    K = torch.zeros(N, N, dtype=hosvd.ACC)
    K[:n_old, :n_old] = known.cpu()
    new = stores[n_old:]
    if len(new) > 1:
        read_rows, rows = row_block_reader(new, target)
        K[n_old:, n_old:] = model_gram_dense(read_rows, len(new), m, n, rows, device=device).cpu()
    else:
        K[n_old, n_old] = new_sq[0]
    Zn, rn = torch.stack(new_z), torch.tensor(new_r, dtype=hosvd.ACC)
    cross = hosvd.sketched_gram(Zn, gram.Z, rn, gram.r, gram.ref_sq)
    K[n_old:, :n_old], K[:n_old, n_old:] = cross, cross.T
    return K.to(device), GramSketch(gram.ref, gram.ref_sq, torch.cat([gram.Z, Zn]), torch.cat([gram.r, rn]), gram.seed)


CACHE_ARRAYS = ("S", "R", "C", "Y_row", "Y_col", "shift")
CACHE_ATTRS = ("count", "sq", "sketch_row", "sketch_col", "sketch_seed")
CACHE_FORMAT = 2  # bump when the meaning of the cached sums changes: old caches are then ignored


def load_cache(path: str | os.PathLike, target: layers.Target, device: str) -> Cached | None:
    """The cached sums of one target, if present and made with the same shape and format."""
    try:
        g = zarr.open_group(str(path), mode="r")[target.name]
    except (FileNotFoundError, KeyError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return None
    if tuple(g.attrs["shape"]) != target.shape or g.attrs.get("format") != CACHE_FORMAT:
        return None

    def restore(prefix: str, attrs: dict) -> hosvd.ModeSums:
        sums = hosvd.ModeSums(*target.shape, device=device,
                              sketch_row=attrs["sketch_row"], sketch_col=attrs["sketch_col"],
                              sketch_seed=attrs["sketch_seed"],
                              product_dtype=getattr(torch, attrs.get("precision", "float64")))
        for name in CACHE_ARRAYS:
            if getattr(sums, name) is not None or (name == "shift" and prefix + name in g):
                setattr(sums, name, torch.from_numpy(np.asarray(g[prefix + name][...])).to(device))
        sums.count, sums.sq = int(attrs["count"]), float(attrs["sq"])
        return sums

    null = restore("null_", g.attrs["null"]) if g.attrs.get("null") else None
    svals = torch.from_numpy(np.asarray(g["svals"][...])) if "svals" in g else None
    array = lambda key: torch.from_numpy(np.asarray(g[key][...]))  # noqa: E731
    sk = g.attrs.get("gram_sketch")
    gram = GramSketch(array("gram_ref"), float(sk["ref_sq"]), array("gram_Z"), array("gram_r"), int(sk["seed"])) if sk else None
    null_grams = {mode: array(f"null_gram_{mode}") for mode in ("row", "col") if f"null_gram_{mode}" in g}
    return Cached(list(g.attrs["models"]), restore("", dict(g.attrs)), array("K"), null, svals, gram,
                  null_grams or None, g.attrs.get("null_gram_seed"))


def save_cache(path: str | os.PathLike, caches: dict[str, Cached]) -> None:
    """Write every target's sums and raw model Gram (float64) atomically."""
    with atomic_path(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        for name, c in caches.items():
            g = root.create_group(name)
            g.attrs.update({"models": c.models, "shape": [c.sums.m, c.sums.n], "format": CACHE_FORMAT,
                            "precision": str(c.sums.product_dtype).removeprefix("torch."),
                            **{a: getattr(c.sums, a) for a in CACHE_ATTRS}})
            arrays = {key: getattr(c.sums, key) for key in CACHE_ARRAYS} | {"K": c.K, "svals": c.svals}
            if c.gram is not None:
                arrays |= {"gram_ref": c.gram.ref, "gram_Z": c.gram.Z, "gram_r": c.gram.r}
                g.attrs["gram_sketch"] = {"ref_sq": c.gram.ref_sq, "seed": c.gram.seed}
            if c.null_grams:  # the rotation null's Grams of these models (see rotation_test)
                arrays |= {f"null_gram_{mode}": G for mode, G in c.null_grams.items()}
                g.attrs["null_gram_seed"] = c.null_seed
            if c.null is not None:
                arrays |= {f"null_{key}": getattr(c.null, key) for key in CACHE_ARRAYS}
                g.attrs["null"] = {a: getattr(c.null, a) for a in CACHE_ATTRS} | {
                    "precision": str(c.null.product_dtype).removeprefix("torch.")}
            for key, value in arrays.items():
                if value is not None:
                    data = value.detach().cpu().numpy()
                    g.create_array(key, data=data, chunks=data.shape, compressors=None)


def write_group(path: str | os.PathLike, results: dict[str, tuple[layers.Target, hosvd.Subspace]],
                attrs: dict) -> None:
    """Write one group's subspaces atomically: a Zarr group per target."""
    with atomic_path(path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        root.attrs.update({**attrs, "targets": sorted(results)})
        for name, (target, sub) in results.items():
            g = root.create_group(name)
            g.attrs.update({"view": target.view, "shape": list(target.shape),
                            "sources": list(target.sources), "k_max": sub.k_max,
                            "total": sub.total, "total_uncentered": sub.total_uncentered,
                            "null_gaussian_total": getattr(sub, "null_gaussian_total", None),
                            "methods": sub.methods, "sharing": getattr(sub, "sharing", None),
                            "sketched": [int(sub.eig_row.shape[0] < target.shape[0]),
                                         int(sub.eig_col.shape[0] < target.shape[1])]})
            arrays = {"mean": sub.mean.float(), "U_row": sub.U_row, "U_col": sub.U_col,
                      "eig_row": sub.eig_row, "eig_col": sub.eig_col, "eig_model": sub.eig_model,
                      "gram_model": sub.gram_model, "eig_row_uncentered": sub.eig_row_uncentered,
                      "eig_col_uncentered": sub.eig_col_uncentered,
                      **{f"null_{k}": v for k, v in sub.nulls.items()}}
            for key, value in arrays.items():
                data = value.detach().cpu().numpy()
                g.create_array(key, data=data, chunks=data.shape, compressors=None)


def run_group(store_paths: list[str], view: str, n_groups: int, group: int, out_path: str, *,
              max_k: int, center: bool, gaussian_null: bool, rotation_null: bool, seed: int,
              device: str, cache_path: str | None = None, exact_max_dim: int = 8192,
              precision: str = "float64", sketch_when_cheaper: bool = True, null_draws: int = 99,
              test_k: int = 16, model_gram: str = "exact", gram_sketch_width: int = 4096) -> None:
    """The subspace job: decompose every target of one layer group and write the store.

    With ``cache_path``, the additive sums of every target are kept there (float64) and reused
    on the next run: adding models then reads only the new models into the sums.
    """
    stores = [ModelStore(p) for p in store_paths]
    if len(stores) < 2:
        raise ValueError(f"the subspace needs at least two basis models, got {len(stores)}")
    for st in stores[1:]:
        check_same_targets(stores[0], st, view)
    chosen = group_targets(stores[0], view, n_groups, group)
    log.info("view %s group %d/%d: %d targets over %d basis models on %s",
             view, group, n_groups, len(chosen), len(stores), device)
    results, caches = {}, {}
    for target in chosen:
        cached = load_cache(cache_path, target, device) if cache_path else None
        sub, caches[target.name] = decompose_target(
            stores, target, max_k=max_k, center=center, gaussian_null=gaussian_null,
            rotation_null=rotation_null, seed=seed, device=device, cached=cached,
            exact_max_dim=exact_max_dim, precision=precision, sketch_when_cheaper=sketch_when_cheaper,
            null_draws=null_draws, test_k=test_k, gram_sketch_width=gram_sketch_width,
            model_gram=model_gram if cache_path else "exact")  # sketches serve a cache only
        ev = stats.explained_variance(sub.eig_row, sub.total)
        log.info("%s %s: row-mode explained variance at k=1,4,16: %s", target.name, target.shape,
                 [round(float(ev[min(k, len(ev)) - 1]), 3) for k in (1, 4, 16)])
        results[target.name] = (target, sub)
    models = [m.split("@")[0] for m in next(iter(caches.values())).models] if caches else [s.key for s in stores]
    write_group(out_path, results, {"view": view, "group": group, "n_groups": n_groups,
                                    "models": models, "center": center})
    if cache_path:
        save_cache(cache_path, caches)


class SubspaceRecord:
    """A stored subspace of one target, read back (tensors in float64 on ``device``)."""

    def __init__(self, group: zarr.Group, device="cpu"):
        self.attrs = dict(group.attrs)
        self.shape = tuple(self.attrs["shape"])
        self.sources = tuple(self.attrs["sources"])
        get = lambda k: torch.from_numpy(np.asarray(group[k][...])).to(device, torch.float64)  # noqa: E731
        self.mean, self.U_row, self.U_col = get("mean"), get("U_row"), get("U_col")
        self._group = group

    def array(self, key: str) -> np.ndarray:
        return np.asarray(self._group[key][...])

    def keys(self) -> list[str]:
        return sorted(self._group.array_keys())


def load_subspaces(paths: list[str], device="cpu") -> tuple[dict[str, SubspaceRecord], list[str]]:
    """All targets' subspaces from a view's group stores, and the basis model keys."""
    groups, models = stored_targets(paths)
    return {name: SubspaceRecord(g, device) for name, g in groups.items()}, models


def memory_estimate_mb(store_path: str, view: str, n_groups: int, group: int, n_models: int, *,
                       max_k: int, exact_max_dim: int = 8192, gaussian_null: bool = True,
                       rotation_null: bool = True, sketch_when_cheaper: bool = True,
                       base_mb: int = 500, gram_sketch_width: int = 0, null_draws: int = 99) -> int:
    """Peak memory of one subspace job, from the shapes of its layer group (float64 bytes):

    per target (they are done one after the other, so the largest counts): the sums S and the
    shift of float32 products (2·m·n),
    R and C (m², n², or m·l, n·l when sketched), the same again for the Gaussian null and the
    rotation null, with the rotation null a chunk of its draws' Grams (``NULL_CHUNK_BYTES``) and
    its Grams kept for the cache (R·(m² + n²), twice: the chunks and their concatenation; kept
    only up to ``NULL_CACHE_BYTES``), the per-model products and eigendecomposition workspace (2·(m² + n²)), the
    prefetched matrices (3 models, source copy + float64), the model Gram and its centred copy
    (2·N²), a two-pass sketch's Q and Z (2·n·l), with ``model_gram: sketch`` (width w) the
    models' sketches, the reference R and a block's hashes (N·w + m·n + 2·block); plus the
    row-block buffer and the two read buffers (2·BLOCK_BYTES), 20% margin and the interpreter
    with torch.
    """
    store = ModelStore(store_path)
    worst = 0
    for t in group_targets(store, view, n_groups, group):
        m, n = t.shape
        sk_row, sk_col = sketch_sizes(m, n, max_k, exact_max_dim, sketch_when_cheaper, rotation_null)
        grams = (m * sk_row if sk_row else m * m) + (n * sk_col if sk_col else n * n)
        copies = 1 + (1 if gaussian_null else 0) + (1 if rotation_null else 0)
        work = 2 * ((0 if sk_row else m * m) + (0 if sk_col else n * n))
        numbers = copies * (2 * m * n + grams) + work + 3 * 2 * m * n + 2 * n_models ** 2 + 2 * n * sk_col
        if gram_sketch_width:
            numbers += n_models * gram_sketch_width + m * n + 2 * BLOCK_BYTES // 8
        if rotation_null:
            kept = null_grams_kept(null_draws, [d for d, sk in ((m, sk_row), (n, sk_col)) if not sk])
            numbers += (sharing.NULL_CHUNK_BYTES + 2 * kept) // 8
        worst = max(worst, 8 * numbers)
    return int(base_mb + 1.2 * (worst + 2 * BLOCK_BYTES) / 2**20)
