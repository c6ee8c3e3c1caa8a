"""Sparse-to-dense hypercolumn matching (S2DHM), batched over the retrieved references.

Each reference keypoint carries a descriptor sampled bilinearly at its exact position
(S2DHM took the nearest cell). It is correlated with every cell of the dense query map;
the best cell is the match, kept only if it passes S2DHM's modified ratio test and
optionally refined to sub-cell precision.

Coarse to fine (``coarse_factor`` f > 1): the correlation and the ratio test run on the
query map average-pooled by f (f*f fewer cells, same image-area fraction for the ratio
test's k), then only the f*f full-resolution cells of the coarse winner are re-scored, and the
4 neighbours of the best one for its sub-cell position. f = 1 is the
exhaustive search. All of it runs on the device of the query map with no loop over
keypoints.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .feature_sampling import cell_rows, gather_rows, interpolate_bilinear
from .options import option


@dataclass
class MatcherConfig:
    """Ratio test: the match is kept when ``score_k <= ratio**2 * score_best`` where
    ``score_k`` is the k-th best correlation, k = floor(ratio_k_fraction * h * w)
    (S2DHM: fraction 0.006, ratio 0.9). ``coarse_factor``: 1 searches
    every cell; f > 1 searches a map pooled by f and re-scores a window at full resolution.
    ``max_chunk_elements`` bounds one correlation block [rows, cells] (a row is one reference
    keypoint)."""

    ratio_k_fraction: float = option(0.006, "k of the ratio test as a fraction of the query "
                                            "map's cells (S2DHM: 0.006)", low=0.0, high=1.0)
    ratio: float = option(0.9, "ratio test threshold (S2DHM: 0.9)", name="ratio", low=0.01,
                          high=1.0)
    use_ratio_test: bool = option(True, "S2DHM's ratio test on matches; false keeps ambiguous "
                                        "matches (unsafe: textureless views may produce poses)",
                                  name="use_ratio_test")
    subcell: bool = option(True, "sub-cell refinement of every match (parabola over the "
                                 "neighbouring correlations)")
    coarse_factor: int = option(2, "search a query map pooled by this factor, then refine at "
                                   "full resolution (1: exhaustive)", name="coarse_factor",
                                low=1, high=8)
    max_chunk_elements: int = option(0, "elements of one correlation block [rows, cells] (memory "
                                        "bound; 0: 2^22 on the CPU, 2^26 on a GPU)", low=0)

    def __post_init__(self):
        if int(self.coarse_factor) < 1:
            raise ValueError(f"MatcherConfig.coarse_factor must be >= 1, got {self.coarse_factor}")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"MatcherConfig.ratio must be in (0, 1], got {self.ratio}")


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

    return _subcell_uv(x, y, best, (at(y, x - 1), at(y, x + 1), at(y - 1, x), at(y + 1, x)), h, w)


def _subcell_uv(x: torch.Tensor, y: torch.Tensor, best: torch.Tensor, around, h: int, w: int
                ) -> torch.Tensor:
    """Cell (x, y) [...] shifted to the vertices of the parabolas through its score ``best``
    and its neighbours' ``around`` = (left, right, up, down); no shift on the map border."""
    left, right, up, down = around
    dx = _parabola_offset(left, best, right)
    dy = _parabola_offset(up, best, down)
    dx = torch.where((x > 0) & (x < w - 1), dx, torch.zeros_like(dx))
    dy = torch.where((y > 0) & (y < h - 1), dy, torch.zeros_like(dy))
    return torch.stack([x.to(dx.dtype) + dx, y.to(dy.dtype) + dy], -1)


def _best_and_ratio_test(corr: torch.Tensor, config: MatcherConfig):
    """corr [k,N,M] -> (best [k,N], argbest [k,N], kept [k,N] bool).

    Kept: the k-th best score <= ratio^2 * best, k = max(2, floor(ratio_k_fraction * M))
    (S2DHM's test; everything is kept when the test is off).
    """
    if not config.use_ratio_test:
        best, arg = corr.max(dim=-1)
        return best, arg, torch.ones_like(best, dtype=torch.bool)
    kth = min(corr.shape[-1], max(2, int(config.ratio_k_fraction * corr.shape[-1])))
    top, idx = corr.topk(kth, dim=-1)
    best = top[..., 0]
    return best, idx[..., 0], top[..., -1] <= (config.ratio ** 2) * best


def pool_map(fmap: torch.Tensor, factor: int) -> torch.Tensor:
    """[C,h,w] -> [C,ceil(h/f),ceil(w/f)] average of f x f cells, L2-normalised per cell.

    Coarse cell c covers fine cells f*c .. f*c+f-1, so its centre is (c + 0.5) * f - 0.5 in
    fine cells: the stride convention of :mod:`geometry.pixels` holds at both levels.
    """
    if factor == 1:
        return fmap
    pooled = torch.nn.functional.avg_pool2d(fmap[None], factor, ceil_mode=True)[0]
    return torch.nn.functional.normalize(pooled, dim=0)


def _refine_in_window(flat: torch.Tensor, h: int, w: int, desc: torch.Tensor, cu: torch.Tensor,
                      cv: torch.Tensor, factor: int, subcell: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Best full-resolution cell inside coarse winners, then its sub-cell position.

    flat: [h*w, C] the fine map's cells as contiguous rows (what the gathers read); desc: [M,C];
    cu, cv: [M] coarse cells. The f*f fine cells of the coarse cell are scored, then
    (``subcell``) the 4 neighbours of the best one, for the parabola fit.
    Returns uv [M,2] in fine cells and scores [M].
    """
    offsets = torch.arange(factor, device=flat.device)
    xs = (cu[:, None] * factor + offsets).clamp(max=w - 1)  # [M,f]
    ys = (cv[:, None] * factor + offsets).clamp(max=h - 1)
    cells = (ys[:, :, None] * w + xs[:, None, :]).reshape(len(cu), factor * factor)
    best, arg = torch.einsum("mkc,mc->mk", gather_rows(flat, cells), desc).max(dim=-1)
    x = xs.gather(1, (arg % factor)[:, None])[:, 0]
    y = ys.gather(1, (arg // factor)[:, None])[:, 0]
    if not subcell:
        return torch.stack([x, y], -1).to(flat.dtype), best
    nx = torch.stack([x - 1, x + 1, x, x], -1).clamp(0, w - 1)
    ny = torch.stack([y, y, y - 1, y + 1], -1).clamp(0, h - 1)
    around = torch.einsum("mkc,mc->mk", gather_rows(flat, ny * w + nx), desc)  # left, right, up, down
    return _subcell_uv(x, y, best, around.unbind(-1), h, w).to(flat.dtype), best


def _refine_kept(table: torch.Tensor, h: int, w: int, desc: torch.Tensor, arg: torch.Tensor,
                 keep: torch.Tensor, ws: int, factor: int,
                 config: MatcherConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-resolution positions [R,2] and scores [R] of the kept coarse matches.

    table [h*w, C]: the fine map's cell rows (:func:`~ros2_s2dhm.feature_sampling.cell_rows`);
    desc [R,C] (a row per reference keypoint), arg [R] flat coarse cells (width ws), keep [R].
    Rejected matches keep the coarse cell centre and score -inf (they are invalid anyway); the
    window re-scoring runs in blocks of at most ``config.max_chunk_elements`` gathered values.
    """
    cu, cv = arg % ws, arg // ws
    uv = torch.stack([(cu + 0.5) * factor - 0.5, (cv + 0.5) * factor - 0.5], -1).to(table.dtype)
    scores = torch.full(arg.shape, -torch.inf, dtype=table.dtype, device=table.device)
    rows = torch.nonzero(keep).flatten()
    block = max(1, chunk_elements(config, table.device) // ((factor * factor + 4) * desc.shape[-1]))
    for start in range(0, len(rows), block):
        r = rows[start:start + block]
        uv[r], scores[r] = _refine_in_window(table, h, w, desc[r], cu[r], cv[r], factor, config.subcell)
    return uv, scores


def match_sparse_to_dense(query_map: torch.Tensor, ref_descriptors: torch.Tensor,
                          ref_mask: torch.Tensor, config: MatcherConfig = MatcherConfig(),
                          coarse_map: torch.Tensor | None = None) -> Matches:
    """Match reference keypoint descriptors densely into the query map.

    query_map: [C,h,w] L2-normalised query map (hypercolumn or its projection); laid out by
    :func:`~ros2_s2dhm.feature_sampling.cells_last`, the window re-scoring reads it uncopied.
    ref_descriptors: [K,N,C] reference descriptors at keypoints (any float dtype; computed in
    the query map's dtype). ref_mask: [K,N] bool, False for padding.
    coarse_map: the query map pooled by ``config.coarse_factor`` (:func:`pool_map`), when the
    caller already has it (it is computed otherwise).
    """
    factor = int(config.coarse_factor)
    C, h, w = query_map.shape
    if factor > 1 and coarse_map is None:
        coarse_map = pool_map(query_map, factor)
    search = query_map if factor == 1 else coarse_map
    _, hs, ws = search.shape
    K, N, _ = ref_descriptors.shape
    q = search.reshape(C, hs * ws).contiguous()  # a copy only for a cells-last map at factor 1
    table = cell_rows(query_map) if factor > 1 else None  # once for every chunk
    rows = ref_descriptors.reshape(K * N, -1)  # every (reference, keypoint) is one row
    mask = ref_mask.reshape(K * N).to(q.device)
    chunk = max(1, chunk_elements(config, q.device) // (hs * ws))
    uv, scores, valid = [], [], []
    for start in range(0, K * N, chunk):
        d = rows[start:start + chunk].to(device=q.device, dtype=q.dtype)
        corr = d @ q  # [r, hs*ws]
        best, arg, ok = _best_and_ratio_test(corr, config)
        if factor == 1:
            uv.append(_subcell(corr, arg, h, w) if config.subcell
                      else torch.stack([arg % w, arg // w], -1).to(q.dtype))
        else:
            del corr
            ok = ok & mask[start:start + chunk]
            fine_uv, best = _refine_kept(table, h, w, d, arg, ok, ws, factor, config)
            uv.append(fine_uv)
        scores.append(best)
        valid.append(ok)
    valid = torch.cat(valid) & mask
    return Matches(torch.cat(uv).float().view(K, N, 2), torch.cat(scores).float().view(K, N),
                   valid.view(K, N))


def chunk_elements(config: MatcherConfig, device: torch.device) -> int:
    """Elements of one correlation block [rows, cells]: ``config.max_chunk_elements``, or when
    it is 0, 2^22 on the CPU (a block that stays in cache: topk and the window re-scoring read
    it while it is hot) and 2^26 on other devices (fewer, larger kernels)."""
    if config.max_chunk_elements:
        return config.max_chunk_elements
    return 2 ** 22 if torch.device(device).type == "cpu" else 2 ** 26
