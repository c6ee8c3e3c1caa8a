"""Compact matching descriptors: hypercolumns projected to a small dimension and stored as int8.

The map stores, per reference keypoint, its hypercolumn projected by a PCA fitted on the map's
own reference hypercolumns (:class:`~ros2_s2dhm.features.pca.PCA`, L2-normalised after the
projection) and quantised to int8 with one scale per vector. The query's dense hypercolumn is
projected once per query with the same PCA, so matching and Feature-metric PnP run in the
small space.

Quantisation: ``q = round(127 * x / max|x|)``, ``scale = max|x| / 127`` (float16), so
``x ~= q * scale`` with an absolute error of at most ``scale / 2`` per component.
"""
from __future__ import annotations

import torch

from .features.pca import PCA

__all__ = ["QUANT_MAX", "quantize_int8", "dequantize_int8", "project_map"]

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
    """Dense feature map [C, H, W] -> [d, H, W], each cell projected and L2-normalised."""
    c, h, w = fmap.shape
    return projection.transform(fmap.reshape(c, h * w).T).T.reshape(-1, h, w).contiguous()
