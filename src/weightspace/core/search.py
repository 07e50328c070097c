"""Choosing a hyper-parameter on validation data: a grid that widens until its optimum is inside."""

from __future__ import annotations


def widened_grid_best(trial, scores: dict, grid: list[float], factor: float | None = None, extend: int = 4
                      ) -> tuple[float, bool]:
    """The value of a positive hyper-parameter (a learning rate, a merge scale λ) with the best
    validation score (ties: the smaller value), the grid widened until that optimum lies strictly
    inside it: while the best value is the largest (the smallest) and strictly better than its
    neighbour, one more value ``factor`` times larger (smaller) is tried, at most ``extend``
    times. ``trial(v)`` fills ``scores[v]``; ``factor`` defaults to the grid's largest ratio
    between neighbours (√10 for one value). Returns (value, still on the grid's edge)."""
    grid = sorted(set(grid))
    for lr in grid:
        trial(lr)
    if factor is None:
        factor = max((b / a for a, b in zip(grid, grid[1:])), default=10 ** 0.5)

    def best():
        return max(grid, key=lambda v: (scores[v], -v))

    def on_edge(lr):
        if len(grid) < 2 or lr not in (grid[0], grid[-1]):
            return False
        neighbour = grid[1] if lr == grid[0] else grid[-2]
        return scores[lr] > scores[neighbour]

    for _ in range(extend):
        lr = best()
        if not on_edge(lr):
            break
        new = float(f"{(lr * factor if lr == grid[-1] else lr / factor):.3g}")
        grid.insert(len(grid) if lr == grid[-1] else 0, new)
        trial(new)
    lr = best()
    return lr, on_edge(lr)
