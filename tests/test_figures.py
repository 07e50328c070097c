"""Figures that stay readable from 3 to 300 matrices and from 10 to 500 models: the styles and
labels they are drawn with (the figures themselves are looked at; see the closing notes)."""

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
