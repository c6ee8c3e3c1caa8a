"""Choosing a budget of image points that covers the image, not only its best region."""
from __future__ import annotations

import numpy as np

__all__ = ["select_spread"]


def select_spread(uv: np.ndarray, priority: np.ndarray, width: int, height: int,
                  max_count: int, grid: int) -> np.ndarray:
    """Sorted indices of at most ``max_count`` of the points ``uv [M, 2]`` (pixels), spread
    over the image by priority ``[M]`` (higher first).

    Points are binned into grid x grid cells; cells are visited round-robin, each giving its
    next-highest-priority point, so no image region (e.g. the far end of a street where the
    long tracks or the best matches sit) takes the whole budget. ``grid`` 1 (or fewer points
    than the budget) keeps the highest priorities.
    """
    m = len(uv)
    if m <= max_count:
        return np.arange(m)
    grid = max(int(grid), 1)
    cx = np.clip((uv[:, 0] + 0.5) * grid / width, 0, grid - 1).astype(np.int64)
    cy = np.clip((uv[:, 1] + 0.5) * grid / height, 0, grid - 1).astype(np.int64)
    cell = cy * grid + cx
    order = np.lexsort((-priority, cell))  # by cell, then highest priority first
    sorted_cells = cell[order]
    first = np.searchsorted(sorted_cells, sorted_cells, side="left")
    rank = np.arange(m) - first  # rank of each point inside its cell
    # round by round: every cell's best, then every cell's second... (cells of a round in
    # row-major order, so a budget smaller than the occupied cells favours the top rows)
    pick = order[np.lexsort((sorted_cells, rank))][:max_count]
    return np.sort(pick)
