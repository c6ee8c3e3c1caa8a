"""Sparse-to-dense hypercolumn matching (S2DHM), batched over the retrieved references.

Each reference keypoint carries a hypercolumn sampled bilinearly at its exact
position (S2DHM took the nearest cell). It is correlated with every cell of the
dense query hypercolumn; the best cell is the match, kept only if it passes
S2DHM's modified ratio test and optionally refined to sub-cell precision.
All of it runs on the device of the query map with no loop over keypoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .feature_sampling import interpolate_bilinear


@dataclass
class MatcherConfig:
    """Ratio test: the match is kept when ``score_k <= ratio**2 * score_best`` where
    ``score_k`` is the k-th best correlation, k = floor(ratio_k_fraction * h * w)
    (S2DHM: fraction 0.006, ratio 0.9). ``max_chunk_elements`` bounds the size of one
    correlation block [refs, keypoints, cells] to keep memory flat."""

    ratio_k_fraction: float = 0.006
    ratio: float = 0.9
    use_ratio_test: bool = True
    subcell: bool = True
    max_chunk_elements: int = 2 ** 26


@dataclass
class Matches:
    """query_uv: [K,N,2] (u, v) in query feature-map cells; scores, valid: [K,N]."""

    query_uv: torch.Tensor
    scores: torch.Tensor
    valid: torch.Tensor


def sample_descriptors(feature_map: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Hypercolumns of a feature map [C,H,W] at sub-cell positions uv [N,2] -> [N,C].

    The same bilinear interpolation as Feature-metric PnP uses for the query (exact at cells,
    border cells repeated outside the map), so reference and query features agree.
    """
    return interpolate_bilinear(feature_map, uv.to(feature_map.device))[0]


def _parabola_offset(left: torch.Tensor, centre: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """Vertex offset in [-0.5, 0.5] of the parabola through three equally spaced scores."""
    denom = left - 2.0 * centre + right
    offset = 0.5 * (left - right) / torch.where(denom < 0, denom, torch.full_like(denom, -1.0))
    offset = torch.where(denom < 0, offset, torch.zeros_like(offset))
    return offset.clamp(-0.5, 0.5)


def _subcell(scores: torch.Tensor, arg: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """scores: [k,N,h*w], arg: [k,N] flat argmax -> [k,N,2] refined (u, v)."""
    y, x = arg // w, arg % w
    best = scores.gather(-1, arg[..., None])[..., 0]

    def at(yy, xx):
        idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1))[..., None]
        return scores.gather(-1, idx)[..., 0]

    dx = _parabola_offset(at(y, x - 1), best, at(y, x + 1))
    dy = _parabola_offset(at(y - 1, x), best, at(y + 1, x))
    dx = torch.where((x > 0) & (x < w - 1), dx, torch.zeros_like(dx))
    dy = torch.where((y > 0) & (y < h - 1), dy, torch.zeros_like(dy))
    return torch.stack([x.to(dx.dtype) + dx, y.to(dy.dtype) + dy], -1)


def match_sparse_to_dense(query_map: torch.Tensor, ref_descriptors: torch.Tensor,
                          ref_mask: torch.Tensor, config: MatcherConfig = MatcherConfig()) -> Matches:
    """Match reference keypoint descriptors densely into the query hypercolumn.

    query_map: [C,h,w] L2-normalised query hypercolumn.
    ref_descriptors: [K,N,C] reference hypercolumns at keypoints (any float dtype;
    computed in the query map's dtype). ref_mask: [K,N] bool, False for padding.
    """
    C, h, w = query_map.shape
    K, N, _ = ref_descriptors.shape
    q = query_map.reshape(C, h * w)
    kth = max(2, int(config.ratio_k_fraction * h * w))
    chunk = max(1, config.max_chunk_elements // max(1, N * h * w))
    uv, scores, valid = [], [], []
    for start in range(0, K, chunk):
        d = ref_descriptors[start:start + chunk].to(device=q.device, dtype=q.dtype)
        corr = torch.matmul(d, q)  # [k,N,h*w]
        if config.use_ratio_test:
            top, idx = corr.topk(kth, dim=-1)
            best, arg = top[..., 0], idx[..., 0]
            ok = top[..., -1] <= (config.ratio ** 2) * best
        else:
            best, arg = corr.max(dim=-1)
            ok = torch.ones_like(best, dtype=torch.bool)
        if config.subcell:
            uv.append(_subcell(corr, arg, h, w))
        else:
            uv.append(torch.stack([arg % w, arg // w], -1).to(q.dtype))
        scores.append(best)
        valid.append(ok)
    valid = torch.cat(valid) & ref_mask.to(q.device)
    return Matches(torch.cat(uv).float(), torch.cat(scores).float(), valid)
