"""Figures that stay readable from 3 to 300 matrices and from 10 to 500 models: the styles and
labels they are drawn with (the figures themselves are looked at; see the closing notes)."""

import numpy as np

from weightspace import figures


def test_many_matrices_are_coloured_and_named_by_kind():
    kinds = ["attention.self.query", "attention.self.key", "intermediate.dense"]
    many = [f"encoder.layer.{i}.{k}.weight" for i in range(100) for k in kinds]
    assert figures.matrix_kind("encoder.layer.12.attention.self.query.weight") == "encoder.layer.#.attention.self.query.weight"
    assert figures.matrix_kind("fc2.weight") == "fc2.weight"  # a number inside a name is not a layer index
    colors = figures.matrix_colors(many)
    assert len(set(colors.values())) == 3
    labels = [h.get_label() for h in figures.matrix_handles(colors)]
    assert labels == [f"encoder.layer.#.{k}.weight (×100)" for k in kinds]
    few = ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert [h.get_label() for h in figures.matrix_handles(figures.matrix_colors(few))] == few
    assert len(set(figures.matrix_colors(few).values())) == 3


def test_heatmap_labels_are_thinned_to_a_readable_number():
    tasks = {f"m{i}": f"t{i % 3}" for i in range(500)}
    labels = figures.tick_labels(list(tasks), tasks)
    assert len(labels) == 500 and 20 <= sum(bool(x) for x in labels) <= figures.MAX_TICKS
    assert labels[0] == "m0 (t0)"
    ten = figures.tick_labels([f"m{i}" for i in range(10)], {})
    assert ten == [f"m{i}" for i in range(10)]



def test_k_that_compresses_nothing_is_named_and_left_out_of_the_bytes_figure(tmp_path, monkeypatch):
    """At k ≥ both dimensions a matrix's k×k core is the whole matrix: the evaluate log names
    those matrices, and a k at which every matrix is whole gets no point in *_vs_bytes."""
    import types

    import pandas as pd

    from weightspace import evaluate

    subs = {"a": types.SimpleNamespace(shape=(32, 32)), "b": types.SimpleNamespace(shape=(10, 12))}
    monkeypatch.setattr(evaluate.layers, "targets", lambda st, view: [types.SimpleNamespace(name=n, sources=[n])
                                                                      for n in subs])
    monkeypatch.setattr(evaluate.layers, "kept_tensors", lambda st, view: [])
    monkeypatch.setattr(evaluate, "original_bytes", lambda st, view: (32 * 32 + 10 * 12) * 4)
    store = types.SimpleNamespace(nbytes=lambda n: 0, dtype=lambda n: "float32")
    comp = evaluate.compression_table(store, subs, "full", [4, 16, 32], n_models=50)
    proj = comp[comp["method"] == "projected"].set_index("k")
    assert proj["saturated"].to_dict() == {4: 0, 16: 1, 32: 2}  # b (10×12) is whole at 16, a at 32
    assert proj.loc[32, "compression"] > 1 > proj.loc[16, "compression"]
    assert figures.saturated_ks(comp) == [32]
    lines = evaluate.saturation_warnings(comp, subs)
    assert len(lines) == 2 and lines[0].startswith("k=16 is at or above both dimensions of 1 of 2 matrices (b (10, 12))")
    assert "every matrix" in lines[1] and "a (32, 32), b (10, 12)" in lines[1]
    rng = np.random.default_rng(0)
    metrics = pd.DataFrame([{"model": f"m{i}", "split": "basis", "method": m, "k": k, "accuracy": float("nan"),
                             "rel_error_centered": rng.random()}
                            for i in range(3) for m in figures.METHOD_ORDER for k in (4, 16, 32)])
    drawn = {}
    lineplot = figures.sns.lineplot
    monkeypatch.setattr(figures.sns, "lineplot", lambda data=None, **kw: drawn.update(k=set(data["k"])) or
                        lineplot(data=data, **kw))
    figures.compression_figure(metrics, comp, "t", str(tmp_path / "c.png"))
    assert drawn["k"] == {4, 16} and (tmp_path / "c.png").stat().st_size > 0


def test_bytes_figure_keeps_the_originals_in_view_and_names_an_svd_hidden_under_the_mean(tmp_path, monkeypatch):
    """LoRA deltas stored as a full-matrix basis cost more bytes than the adapters (MiniLM: ~2×):
    the x axis still reaches 1 (the originals' stars), and an svd baseline that holds no rank
    (equal to the mean at every point) is named as such in the legend, since its line is hidden."""
    import pandas as pd

    rng = np.random.default_rng(1)
    rows = []
    for i in range(4):
        for k in (1, 2, 4):
            err = {"projected": rng.random(), "random": rng.random()}
            err["mean"] = err["svd"] = 1.0 + i
            rows += [{"model": f"m{i}", "split": "basis", "method": m, "k": k, "accuracy": rng.random(),
                      "rel_error_centered": err[m]} for m in figures.METHOD_ORDER]
        rows.append({"model": f"m{i}", "split": "basis", "method": "original", "k": float("nan"),
                     "accuracy": 0.7, "rel_error_centered": 0.0})
    metrics = pd.DataFrame(rows)
    comp = pd.DataFrame([{"method": m, "k": k, "compression": 1.9 + 0.01 * k} for m in figures.METHOD_ORDER
                         for k in (1, 2, 4)])
    assert figures.svd_is_mean(metrics)
    saved = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.update(fig=fig))
    figures.compression_figure(metrics, comp, "t", str(tmp_path / "c.png"))
    ax = saved["fig"].axes[0]
    lo, hi = ax.get_xlim()
    assert lo < 1.0 < 1.9 < hi
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "svd (= mean: no rank fits its bytes)" in labels and "svd" not in labels
    metrics.loc[(metrics["method"] == "svd") & (metrics["k"] == 4), "rel_error_centered"] = 0.5
    assert not figures.svd_is_mean(metrics)
