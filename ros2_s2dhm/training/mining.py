"""Sampling of positive correspondences and progressive hard-negative mining.

Negatives (paper, Sec. 3.3): for an anchor in image a, the candidates are the cells
of image b's feature map farther than ``alpha`` from the true match; they are sorted
by descriptor distance to the anchor and one is drawn at random among the ``M``
nearest, with ``M = max(M_min, M_0 * exp(-decay * k / period))`` shrinking with the
global iteration ``k`` (300 -> 5 in the paper), so negatives get harder over training.
"""
from __future__ import annotations

import math

import torch

__all__ = ["mining_pool_size", "sample_positive_indices", "mine_negatives"]


def mining_pool_size(iteration: int, initial: float = 300.0, minimum: int = 5, decay: float = 0.6,
                     period: float = 10000.0) -> int:
    """M = max(minimum, round(initial * exp(-decay * iteration / period)))."""
    return max(int(minimum), int(round(initial * math.exp(-decay * iteration / period))))


def sample_positive_indices(num_available: int, num_samples: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``num_samples`` distinct random indices in [0, num_available) (all of them,
    shuffled, when fewer are available) -> (min(num_available, num_samples),) int64."""
    return torch.randperm(num_available, generator=generator)[:num_samples]


@torch.no_grad()
def mine_negatives(desc_a: torch.Tensor, features_b: torch.Tensor, target_b: torch.Tensor,
                   alpha: float, pool_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mine one negative cell of ``features_b`` per anchor.

    desc_a: (N, C) anchor descriptors; features_b: (C, H, W); target_b: (N, 2) true
    matches in feature pixels of b; alpha: exclusion radius in feature pixels.
    Returns (cells (K, 2) integer (x, y) feature-pixel positions as float, anchor
    indices (K,) int64); K < N only when an anchor has no candidate at all.
    ``generator`` is a CPU generator (the draw does not depend on the device).
    """
    channels, height, width = features_b.shape
    flat = features_b.reshape(channels, height * width)
    distances = torch.cdist(desc_a[None].float(), flat.T[None].float())[0]        # (N, HW)
    ys, xs = torch.meshgrid(torch.arange(height, device=flat.device), torch.arange(width, device=flat.device),
                            indexing="ij")
    cells = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1).to(target_b.dtype)  # (HW, 2)
    too_close = torch.cdist(target_b[None], cells[None])[0] <= alpha                # (N, HW)
    distances = distances.masked_fill(too_close, float("inf"))
    pool = min(int(pool_size), height * width)
    nearest_dist, nearest_idx = torch.topk(distances, pool, dim=1, largest=False)  # (N, pool)
    available = torch.isfinite(nearest_dist).sum(dim=1)                             # (N,)
    draw = torch.rand(desc_a.shape[0], generator=generator).to(flat.device)
    choice = (draw * available.to(draw.dtype)).long().clamp(max=pool - 1)
    chosen = nearest_idx.gather(1, choice[:, None])[:, 0]
    keep = available > 0
    anchors = torch.nonzero(keep, as_tuple=False)[:, 0]
    return cells[chosen[keep]], anchors
