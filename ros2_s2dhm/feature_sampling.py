"""Sampling of dense feature maps: the one bilinear interpolation and the image gradients.

Feature maps are ``[C, H, W]`` with cell centres at integer positions (OpenCV convention at the
map's stride, see :mod:`geometry.pixels`). Used by matching (reference descriptors at keypoints),
Feature-metric PnP (features and gradients at projections) and the training losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

__all__ = ["GRADIENTS", "feature_gradients", "interpolate_bilinear"]

GRADIENTS = ("central", "sobel")


def feature_gradients(fmap: torch.Tensor, method: str = "central") -> tuple[torch.Tensor, torch.Tensor]:
    """Image gradients ``(d/du, d/dv)``, each ``[C, H, W]``, of a feature map ``[C, H, W]``.

    ``central``: second-order central differences (one-sided at the border); ``sobel``: 3x3 Sobel / 8
    with replicated borders.
    """
    if method == "central":
        d_dv, d_du = torch.gradient(fmap, dim=(1, 2))
        return d_du, d_dv
    if method == "sobel":
        k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=fmap.dtype,
                         device=fmap.device) / 8
        kernels = torch.stack([k, k.T])[:, None]  # [2, 1, 3, 3]
        padded = nnf.pad(fmap[:, None], (1, 1, 1, 1), mode="replicate")
        grads = nnf.conv2d(padded, kernels)  # [C, 2, H, W]
        return grads[:, 0], grads[:, 1]
    raise ValueError(f"unknown gradient method '{method}', expected one of {GRADIENTS}")


def _bilinear_cell(uv: torch.Tensor, H: int, W: int):
    """Top-left cell corner ``(x0, y0)`` (long), fractions ``(wx, wy)`` and validity of pixels ``uv [N, 2]``."""
    u, v = uv[:, 0], uv[:, 1]
    valid = torch.isfinite(u) & torch.isfinite(v) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    u = torch.nan_to_num(u).clamp(0, W - 1)
    v = torch.nan_to_num(v).clamp(0, H - 1)
    x0, y0 = u.floor(), v.floor()
    return x0.long(), y0.long(), u - x0, v - y0, valid


def interpolate_bilinear(fmap: torch.Tensor, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinearly sample ``fmap [C, H, W]`` at pixels ``uv [N, 2]`` (OpenCV convention, pixel centres at integers).

    Returns ``(values [N, C], valid [N])``; exact at integer pixels; points outside
    ``[0, W-1] x [0, H-1]`` (or non-finite) are invalid and get the clamped border value.
    """
    C, H, W = fmap.shape
    x0, y0, wx, wy, valid = _bilinear_cell(uv, H, W)
    wx, wy = wx.to(fmap.dtype)[:, None], wy.to(fmap.dtype)[:, None]
    x1, y1 = (x0 + 1).clamp(max=W - 1), (y0 + 1).clamp(max=H - 1)
    flat = fmap.reshape(C, H * W)

    def gather(y, x):
        return flat[:, y * W + x].T  # [N, C]

    top = gather(y0, x0) * (1 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1 - wx) + gather(y1, x1) * wx
    return top * (1 - wy) + bottom * wy, valid
