r"""The align stage: representations of a probe set, and their alignment across models.

For every model of a collection, original and projected at k (Ŵ = μ + U_row C U_colᵀ, the
same reconstruction the evaluator scores), the collection's evaluator computes the
representations of one probe set at every layer (``features``: hidden activations of a zoo
MLP on held-out digits; mean-pooled hidden states of a text model; CLS states of an image
model). They are cached in ``features.zarr``: ``{variant}/{model}/{layer}`` arrays, n×d float32.

Alignment (``alignment_table``) is measured for every pair of models within each variant, and
between each model and its own projection (variant ``original~projected``), with every metric
of :mod:`weightspace.core.align` on the prepared features. Its baseline (variant ``null``) is the
same comparison after shuffling one model's probe inputs (pairs among the first
``NULL_MODELS`` models, best layer pair included, so the null carries the same selection bias).
The layer pair is the one maximising the metric over all layer pairs (Huh et al.), or fixed (``layers: last`` or a layer index).

Weight-space similarity of a pair (``weight_similarity``) is the cosine of the centred
model-mode Gram summed over the view's targets, G_ij = Σ_t ⟨W_i,t − μ_t, W_j,t − μ_t⟩ and
cos_ij = G_ij / √(G_ii G_jj), from the subspace stage (basis models only).
"""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pandas as pd
import torch
import zarr
from tqdm import tqdm

from . import layers
from .core import align
from .assemble import effective_weights, model_config
from .io import atomic_path
from .core.hosvd import dense
from .project import projection
from .store import ModelStore

log = logging.getLogger("weightspace")
VARIANTS = ("original", "projected")
NULL_MODELS = 10  # the permuted-probe null: pairs among the first NULL_MODELS models


def model_weights(st: ModelStore, subspaces: dict, C: dict, view: str, k: int | None, base):
    """The effective weights of a model: original (k None) or projected at k."""
    tmap = {t.name: t for t in layers.targets(st, view)}
    mats = {}
    for name, sub in subspaces.items():
        mats[name] = (dense(layers.read_target(st, tmap[name])) if k is None
                      else projection(C[name], sub, k))
    return effective_weights(view, st, mats, base)


def extract_features(store_paths: list[str], subspaces: dict, coeff_path: str, view: str, k: int,
                     evaluator, n: int, out_path: str, pooling: str = "auto") -> None:
    """Write every model's probe representations (original and projected at k) to Zarr."""
    coeffs = zarr.open_group(coeff_path, mode="r")
    index = {key: i for i, key in enumerate(coeffs.attrs["models"])}
    base = evaluator.base_weights() if view in ("factors", "delta") else None
    with atomic_path(out_path) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        keys, n_layers = [], None
        for path in tqdm(store_paths, desc="features", mininterval=5):
            st = ModelStore(path)
            keys.append(st.key)
            C = {name: torch.from_numpy(np.asarray(coeffs[name][index[st.key]])).double() for name in subspaces}
            for variant, kk in (("original", None), ("projected", k)):
                feats = evaluator.features(model_config(st), model_weights(st, subspaces, C, view, kk, base),
                                           n, pooling)
                n_layers = len(feats)
                write_layers(root.require_group(f"{variant}/{st.key}"), feats)
        if base is not None and keys:  # the base model's own representations (align.across: "<c>:base")
            write_layers(root.require_group("base/base"), evaluator.features(model_config(st), dict(base), n, pooling))
        probe = evaluator.probe_id(n, model_config(st) if keys else None) if hasattr(evaluator, "probe_id") else None
        root.attrs.update({"models": keys, "n_layers": n_layers, "k": k, "view": view, "probe": probe,
                           "base": base is not None and bool(keys)})


def write_layers(group: zarr.Group, feats: list[torch.Tensor]) -> None:
    """One model's per-layer representations, ``layer-{i:02d}`` arrays (float32, one chunk)."""
    for i, f in enumerate(feats):
        data = f.float().numpy()
        group.create_array(f"layer-{i:02d}", data=data, chunks=data.shape, compressors=None)


def read_layers(root: zarr.Group, variant: str, model: str, n_layers: int) -> list[torch.Tensor]:
    """One model's per-layer representations as written by ``write_layers``, float64."""
    return [torch.from_numpy(np.asarray(root[f"{variant}/{model}/layer-{i:02d}"][...])).double()
            for i in range(n_layers)]


def load_features(path: str) -> tuple[dict, list[str]]:
    """{variant: {model: [layer tensors, float64]}} and the model keys."""
    root = zarr.open_group(str(path), mode="r")
    keys, L = list(root.attrs["models"]), int(root.attrs["n_layers"])
    return {v: {m: read_layers(root, v, m, L) for m in keys} for v in VARIANTS}, keys


def _layer_pairs(n_layers: int, layers_spec):
    if layers_spec == "best":
        return list(itertools.product(range(n_layers), repeat=2))
    i = n_layers - 1 if layers_spec == "last" else int(layers_spec)
    if not -n_layers <= i < n_layers:
        raise ValueError(f"align.layers {layers_spec!r}: the models have {n_layers} layers")
    return [(i % n_layers, i % n_layers)]


def best_pair(block: torch.Tensor, pairs) -> tuple[float, int, int]:
    """(score, layer_a, layer_b) maximising the score over the layer pairs (the first of equal
    ones), from the L_a × L_b scores of two models' layers."""
    return max(((float(block[i, j]), i, j) for i, j in pairs), key=lambda t: t[0])


class LazySides:
    """The sides of a list of features, computed as they are read (``align.pack`` writes each
    kernel into its matrix as it comes, so the n×n float64 kernels are never all held)."""

    def __init__(self, metric: str, feats: list, topk: int, cca_dim: int):
        self.metric, self.feats, self.topk, self.cca_dim = metric, feats, topk, cca_dim

    def __len__(self) -> int:
        return len(self.feats)

    def __iter__(self):
        return (align.sides(self.metric, f, self.topk, self.cca_dim) for f in self.feats)


def shared_sides(prepared: dict, topk: int, cca_dim: int):
    """``sides_of(metric, group)``: every prepared feature's sides for one metric (computed as
    they are packed); the neighbour lists, which mutual and cycle k-NN share, are computed once."""
    knn_lists: dict = {}

    def sides_of(metric: str, group: str):
        if metric in ("mutual_knn", "cycle_knn"):
            if group not in knn_lists:
                knn_lists[group] = [align.sides(metric, f, topk, cca_dim) for f in prepared[group]]
            return knn_lists[group]
        return LazySides(metric, prepared[group], topk, cca_dim)
    return sides_of


def alignment_table(features: dict, keys: list[str], metrics=align.METRICS, topk: int = 10,
                    cca_dim: int = 10, layers_spec="best", clamp_quantile: float | None = None
                    ) -> pd.DataFrame:
    """Long table: variant, model_a, model_b, metric, score, layer_a, layer_b. Each model's
    per-layer ``sides`` are computed once per metric; the scores of all pairs of layers of all
    models come as a few matrices (``align.pair_matrix``), from which each model pair takes its
    best layer pair."""
    L = len(features["original"][keys[0]])
    pairs = _layer_pairs(L, layers_spec)
    first = features["original"][keys[0]][0]
    dup = len(first) - len(torch.unique(first, dim=0))
    if dup:
        log.warning("the probe set has %d duplicate inputs (identical representations in model %s): "
                    "k-NN metrics then depend on how ties are broken", dup, keys[0])
    null_keys = keys[:NULL_MODELS]
    n = len(features["original"][keys[0]][0])
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    prepared = {v: [align.prepare(f, clamp_quantile) for m in keys for f in features[v][m]] for v in VARIANTS}
    prepared["null"] = [align.prepare(f[perm], clamp_quantile) for m in null_keys for f in features["original"][m]]
    sides_of = shared_sides(prepared, topk, cca_dim)
    rows = []
    for metric in tqdm(metrics, desc="align", mininterval=5):
        packs = {v: align.pack(metric, sides_of(metric, v)) for v in (*VARIANTS, "null")}
        within = {v: align.scores(packs[v]) for v in VARIANTS}
        null = align.scores(align.rows_of(packs["original"], 0, len(null_keys) * L), packs["null"])

        def block(M, a, b):
            return M[a * L:(a + 1) * L, b * L:(b + 1) * L]

        def add(variant, ka, kb, scores):
            s, i, j = best_pair(scores, pairs)
            rows.append({"variant": variant, "model_a": ka, "model_b": kb, "metric": metric,
                         "score": s, "layer_a": i, "layer_b": j})
        for v in VARIANTS:
            for (a, ka), (b, kb) in itertools.combinations(enumerate(keys), 2):
                add(v, ka, kb, block(within[v], a, b))
                if metric not in align.SYMMETRIC:  # cycle k-NN, CKNNA: b → a is its own score
                    add(v, kb, ka, block(within[v], b, a))
        for a, ka in enumerate(keys):
            add("original~projected", ka, ka, align.scores(
                align.rows_of(packs["original"], a * L, (a + 1) * L), align.rows_of(packs["projected"], a * L, (a + 1) * L)))
        for (a, ka), (b, kb) in itertools.combinations(enumerate(null_keys), 2):
            add("null", ka, kb, block(null, a, b))
    return pd.DataFrame(rows)


def load_member(path: str, base: bool = False, max_models: int | None = None) -> tuple[dict, dict]:
    """One side of a cross-collection comparison: {model: [layer tensors]} of the original
    models (the first ``max_models``), or of the collection's base model (``base``); and the
    features' attributes (probe digest, layers)."""
    root = zarr.open_group(str(path), mode="r")
    attrs = dict(root.attrs)
    L = int(attrs["n_layers"])
    if base:
        if not attrs.get("base"):
            raise ValueError(f"{path}: the collection has no base model (':base' needs an adapter collection)")
        keys, variant = ["base"], "base"
    else:
        keys, variant = list(attrs["models"])[:max_models], "original"
    return {m: read_layers(root, variant, m, L) for m in keys}, attrs


def check_same_probe(attrs_a: dict, attrs_b: dict, a: str, b: str) -> None:
    """Refuse two feature stores probed with different inputs (or without a probe digest)."""
    pa, pb = attrs_a.get("probe"), attrs_b.get("probe")
    if pa is None or pa != pb:
        raise ValueError(f"{a} and {b} were probed with different inputs (probe digests {pa} and {pb}): "
                         "give both collections the same probe items (align.probe / evaluation data, probe_size)")


def _cross_layer_pairs(La: int, Lb: int, layers_spec):
    if layers_spec == "best":
        return list(itertools.product(range(La), range(Lb)))
    if layers_spec == "last":
        return [(La - 1, Lb - 1)]
    i = int(layers_spec)
    if not (-La <= i < La and -Lb <= i < Lb):
        raise ValueError(f"align.layers {layers_spec!r}: the two collections have {La} and {Lb} layers")
    return [(i % La, i % Lb)]


def across_table(fa: dict, fb: dict, metrics=align.METRICS, topk: int = 10, cca_dim: int = 10,
                 layers_spec="best", clamp_quantile: float | None = None) -> pd.DataFrame:
    """Alignment between the models of two collections on the same probe items (architectures
    may differ): variant ``across`` (every model of a against every model of b), ``within_a`` /
    ``within_b`` (pairs inside each side, the reference), and ``null`` (a's models against b's
    with b's probe inputs shuffled, the first ``NULL_MODELS`` of each). Each pair's score is
    the best over layer pairs (or the fixed pair); same long format as ``alignment_table``."""
    ka, kb = list(fa), list(fb)
    La, Lb = len(fa[ka[0]]), len(fb[kb[0]])
    n = len(fa[ka[0]][0])
    if len(fb[kb[0]][0]) != n:
        raise ValueError(f"the two collections have {n} and {len(fb[kb[0]][0])} probe items")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    na, nb = ka[:NULL_MODELS], kb[:NULL_MODELS]
    sides_of = shared_sides({"a": [align.prepare(f, clamp_quantile) for m in ka for f in fa[m]],
                             "b": [align.prepare(f, clamp_quantile) for m in kb for f in fb[m]],
                             "null": [align.prepare(f[perm], clamp_quantile) for m in nb for f in fb[m]]},
                            topk, cca_dim)
    rows = []
    for metric in tqdm(metrics, desc="align across", mininterval=5):
        A, B = align.pack(metric, sides_of(metric, "a")), align.pack(metric, sides_of(metric, "b"))
        blocks = {"across": (align.scores(A, B), ka, kb, La, Lb, False),
                  "within_a": (align.scores(A), ka, ka, La, La, True),
                  "within_b": (align.scores(B), kb, kb, Lb, Lb, True),
                  "null": (align.scores(align.rows_of(A, 0, len(na) * La), align.pack(metric, sides_of(metric, "null"))),
                           na, nb, La, Lb, False)}
        for variant, (M, keys_a, keys_b, la, lb, within) in blocks.items():
            pairs = _cross_layer_pairs(la, lb, layers_spec)
            for a, m_a in enumerate(keys_a):
                for b, m_b in enumerate(keys_b):
                    if within and (b == a or (b < a and metric in align.SYMMETRIC)):
                        continue  # an asymmetric metric's within pairs in both directions
                    s, i, j = best_pair(M[a * la:(a + 1) * la, b * lb:(b + 1) * lb], pairs)
                    rows.append({"variant": variant, "model_a": m_a, "model_b": m_b, "metric": metric,
                                 "score": s, "layer_a": i, "layer_b": j})
    return pd.DataFrame(rows)


def across_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per metric: mean alignment across the two collections, within each, and under the
    shuffled-probe null, with the number of pairs behind each mean."""
    g = table.groupby(["metric", "variant"]).score.agg(["mean", "count"]).unstack("variant")
    out = pd.DataFrame(index=g.index)
    for v in ("across", "within_a", "within_b", "null"):
        if ("mean", v) in g.columns:
            out[v] = g[("mean", v)]
            out[f"{v}_pairs"] = g[("count", v)].astype("Int64")
    return out.reset_index()


def matrix(table: pd.DataFrame, metric: str, variant: str, keys: list[str]) -> pd.DataFrame:
    """The model × model matrix of one metric (1 on the diagonal): row a, column b the score
    of (a, b); a pair scored in one direction only (a symmetric metric) fills both."""
    d = table[(table.metric == metric) & (table.variant == variant)]
    pos = {k: i for i, k in enumerate(keys)}
    a, b = d.model_a.map(pos).to_numpy(), d.model_b.map(pos).to_numpy()
    M = np.eye(len(keys))
    M[b, a] = d.score.to_numpy()
    M[a, b] = d.score.to_numpy()  # where both directions are rows, each keeps its own
    return pd.DataFrame(M, index=keys, columns=keys)


def weight_similarity(subspaces: dict, models: list[str]) -> pd.DataFrame:
    """Pairs of basis models with the cosine of their centred weights (module docstring)."""
    G = sum(torch.from_numpy(s.array("gram_model")).double() for s in subspaces.values())
    d = G.diagonal().clamp(min=1e-300).sqrt()
    cos = G / d[:, None] / d[None, :]
    return pd.DataFrame([{"model_a": a, "model_b": b, "weight_cosine": float(cos[i, j])}
                         for (i, a), (j, b) in itertools.combinations(enumerate(models), 2)])
