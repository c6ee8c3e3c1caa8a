"""Compact matching descriptors: hypercolumns projected to a small dimension and stored as int8.

The map stores, per reference keypoint, its hypercolumn projected by a PCA fitted on the map's
own reference hypercolumns (:class:`~ros2_s2dhm.features.pca.PCA`, L2-normalised after the
projection) and quantised to int8 with one scale per vector. The query's dense hypercolumn is
projected once per query with the same PCA, so matching and Feature-metric PnP run in the
small space.

Quantisation: ``q = round(127 * x / max|x|)``, ``scale = max|x| / 127`` (float16), so
``x ~= q * scale`` with an absolute error of at most ``scale / 2`` per component.

The query's side (:func:`project_taps`) never forms the 2048-channel hypercolumn: projection
and bilinear upsampling are both linear, so each VGG tap is projected at its own resolution and
the d-channel result upsampled; the hypercolumn's per-pixel norm (it is L2-normalised before the
projection) comes from each tap's neighbour inner products (:func:`upsampled_square_norm`).
"""
from __future__ import annotations

import torch

from .features.backbone import HYPERCOLUMN_STRIDE, TAP_STRIDES, upsample_aligned
from .features.pca import PCA

__all__ = ["QUANT_MAX", "quantize_int8", "dequantize_int8", "project_map", "project_taps",
           "upsampled_square_norm"]

QUANT_MAX = 127


def quantize_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., d] float -> (q [..., d] int8, scale [...] float16) with ``x ~= q * scale``.

    The scale is rounded to float16 first and the codes computed with it, so the stored pair
    reproduces ``x`` within ``scale / 2`` per component; an all-zero vector gets scale 0.
    """
    x = x.float()
    peak = x.abs().amax(dim=-1)
    scale = (peak / QUANT_MAX).half()
    safe = torch.where(scale > 0, scale.float(), torch.ones_like(peak))
    q = torch.round(x / safe[..., None]).clamp(-QUANT_MAX, QUANT_MAX).to(torch.int8)
    return q, scale


def dequantize_int8(q: torch.Tensor, scale: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """(q [..., d] int8, scale [...]) -> x [..., d] in ``dtype``."""
    return q.to(dtype) * scale.to(dtype)[..., None]


def project_map(projection: PCA, fmap: torch.Tensor) -> torch.Tensor:
    """Dense feature map [C, H, W] -> [d, H, W], each cell projected and L2-normalised.

    The result is laid out as :func:`~ros2_s2dhm.feature_sampling.cells_last` (the cells are the
    rows of a contiguous [H*W, d]): Feature-PnP's sampler gathers from it without a copy."""
    c, h, w = fmap.shape
    return projection.transform(fmap.reshape(c, h * w).T).T.reshape(-1, h, w)


def _source_rows(out_size: int, upsampled: int, in_size: int, factor: int, device):
    """Bilinear sources of output rows ``0..out_size-1`` of a length-``in_size`` axis upsampled by
    ``factor`` (``align_corners=False``, as F.interpolate) to ``upsampled`` rows, rows past it
    replicating the last (upsample_aligned's edge padding): (i0, i1) [out] long, (w0, w1) [out]."""
    dst = torch.arange(out_size, device=device).clamp_max(upsampled - 1).double()
    src = ((dst + 0.5) / factor - 0.5).clamp_min(0.0)
    i0 = src.floor().long().clamp_max(in_size - 1)
    i1 = (i0 + 1).clamp_max(in_size - 1)
    w1 = (src - i0.double()).float()
    return i0, i1, 1.0 - w1, w1


def _neighbour_products(x: torch.Tensor) -> torch.Tensor:
    """x [C, h, w] -> [5, h, w]: each pixel's inner product with itself, its right, lower,
    lower-right neighbour, and of its right with its lower neighbour; a neighbour past the last
    row or column is the pixel itself (edge clamping). Slices, not gathers: no copy of x."""
    own = (x * x).sum(0)
    right, down = own.clone(), own.clone()
    right[:, :-1] = (x[:, :, :-1] * x[:, :, 1:]).sum(0)
    down[:-1] = (x[:, :-1] * x[:, 1:]).sum(0)
    diag, anti = torch.empty_like(own), torch.empty_like(own)
    diag[:-1, :-1] = (x[:, :-1, :-1] * x[:, 1:, 1:]).sum(0)
    anti[:-1, :-1] = (x[:, :-1, 1:] * x[:, 1:, :-1]).sum(0)
    for edge in (diag, anti):  # clamped: the last row pairs along it, the last column down it
        edge[-1, :] = right[-1, :]
        edge[:, -1] = down[:, -1]
    return torch.stack([own, right, down, diag, anti])


def _upsampled_products(products: torch.Tensor, factor: int, size: tuple[int, int]) -> torch.Tensor:
    """[5, h, w] neighbour products (:func:`_neighbour_products`, or sums of them over maps of one
    shape) -> [size]: the squared norm of the bilinear upsampling by ``factor``, per pixel."""
    _, h, w = products.shape
    i0, i1, a0, a1 = _source_rows(size[0], h * factor, h, factor, products.device)
    j0, j1, b0, b1 = _source_rows(size[1], w * factor, w, factor, products.device)
    a0, a1, b0, b1 = a0[:, None], a1[:, None], b0[None], b1[None]
    top, bottom = products.index_select(1, i0), products.index_select(1, i1)  # [5, H, w]
    own00, right00, down00, diag00, anti00 = top.index_select(2, j0).unbind(0)
    own01, _, down01, _, _ = top.index_select(2, j1).unbind(0)
    own10, right10 = bottom[:2].index_select(2, j0).unbind(0)
    own11 = bottom[0].index_select(1, j1)
    return (a0 * a0 * (b0 * b0 * own00 + b1 * b1 * own01 + 2 * b0 * b1 * right00)
            + a1 * a1 * (b0 * b0 * own10 + b1 * b1 * own11 + 2 * b0 * b1 * right10)
            + 2 * a0 * a1 * (b0 * b0 * down00 + b1 * b1 * down01 + b0 * b1 * (diag00 + anti00)))


def upsampled_square_norm(x: torch.Tensor, factor: int, size: tuple[int, int]) -> torch.Tensor:
    """x [C, h, w] -> [size] float32: the squared per-pixel norm of
    ``upsample_aligned(x[None], factor, size)[0]``, from x's inner products with its right, lower
    and diagonal neighbours (5 maps [h, w]) instead of the C-channel upsampled map."""
    x = x.float()
    c, h, w = x.shape
    if factor == 1 and (h, w) == tuple(size):
        return x.square().sum(0)
    return _upsampled_products(_neighbour_products(x), factor, size)


def project_taps(projection: PCA, taps: list[torch.Tensor]) -> torch.Tensor:
    """The network's five taps [1, C_t, h_t, w_t] (strides 4, 8, 8, 16, 16) -> [d, h4, w4]:
    ``project_map(projection, hypercolumn_from_taps(taps)[0])`` up to float rounding, without
    the [2048, h4, w4] hypercolumn (a quarter of the multiply-adds, no 100 MB intermediate at
    512 px). Each tap's slice of the components projects it at its own resolution; the taps
    of one stride are added before they are upsampled (both steps are linear), as are their
    neighbour products (:func:`_neighbour_products`) before the norm is upsampled."""
    channels = sum(tap.shape[1] for tap in taps)
    if len(taps) != len(TAP_STRIDES) or channels != projection.input_dim:
        raise ValueError(f"project_taps: {len(taps)} taps have {channels} channels, expected "
                         f"{len(TAP_STRIDES)} with {projection.input_dim}")
    size = tuple(taps[0].shape[-2:])
    mean, components, scale = projection.tensors(taps[0].device)
    parts, products = {}, {}  # per upsampling factor: taps of one stride are summed first
    start = 0
    for tap, stride in zip(taps, TAP_STRIDES):
        x = tap[0].float()
        c, h, w = x.shape
        factor = stride // HYPERCOLUMN_STRIDE
        part = (components[:, start:start + c] @ x.reshape(c, h * w)).reshape(1, -1, h, w)
        norms = x.square().sum(0) if factor == 1 else _neighbour_products(x)
        if factor in parts:  # the first tap of a stride is stored as it is (no add to 0)
            parts[factor], products[factor] = parts[factor] + part, products[factor] + norms
        else:
            parts[factor], products[factor] = part, norms
        start += c
    projected = sum(upsample_aligned(part, factor, size) for factor, part in parts.items())
    square_norm = sum(norms if factor == 1 else _upsampled_products(norms, factor, size)
                      for factor, norms in products.items())
    y = projected[0] / square_norm.sqrt().clamp_min(1e-12) - (components @ mean)[:, None, None]
    if projection.whiten:
        y = y / scale[:, None, None]
    return torch.nn.functional.normalize(y, p=2, dim=0).contiguous()
