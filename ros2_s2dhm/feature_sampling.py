"""Sampling of dense feature maps: the one bilinear interpolation, the image gradients, and
:class:`FeatureSampler` (both at once at sub-pixel points, for Feature-metric PnP).

Feature maps are ``[C, H, W]`` with cell centres at integer positions (OpenCV convention at the
map's stride, see :mod:`geometry.pixels`). Used by matching (reference descriptors at keypoints),
Feature-metric PnP (features and gradients at projections) and the training losses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as nnf

__all__ = ["GRADIENTS", "FeatureSampler", "cell_rows", "cells_last", "feature_gradients", "gather_rows",
           "interpolate_bilinear"]

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


def cell_rows(fmap: torch.Tensor) -> torch.Tensor:
    """[C, H, W] -> [H*W, C]: the map's cells as contiguous rows, what :func:`gather_rows`
    reads; a view, not a copy, of a map laid out by :func:`cells_last`."""
    C, H, W = fmap.shape
    return fmap.permute(1, 2, 0).reshape(H * W, C).contiguous()


def cells_last(fmap: torch.Tensor) -> torch.Tensor:
    """[C, H, W] -> the same values as a [C, H, W] view of a contiguous [H*W, C] (one copy), so
    that every later :func:`cell_rows` of the map is free."""
    C, H, W = fmap.shape
    return cell_rows(fmap).T.reshape(C, H, W)


def gather_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``table [R, C]`` at ``index [...]`` (long) -> ``[..., C]``: ``table[index]``
    through ``index_select``, which on the CPU is several times faster than advanced indexing."""
    return table.index_select(0, index.reshape(-1)).view(*index.shape, table.shape[-1])


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
        return flat.index_select(1, y * W + x).T  # [N, C]

    top = gather(y0, x0) * (1 - wx) + gather(y0, x1) * wx
    bottom = gather(y1, x0) * (1 - wx) + gather(y1, x1) * wx
    return top * (1 - wy) + bottom * wy, valid


class FeatureSampler:
    """Samples features and their image gradients at sub-pixel points of one feature map ``[C, H, W]``.

    Equivalent to :func:`interpolate_bilinear` on the map and on :func:`feature_gradients` of the map,
    but gradients are only computed on the 4x4 pixel neighbourhood of each point (no dense gradient
    maps) from the map's cell rows (:func:`cell_rows`: a copy unless the map is laid out by
    :func:`cells_last`), so a call costs O(N C) with contiguous gathers.
    """

    def __init__(self, fmap: torch.Tensor, gradient: str = "central"):
        if gradient not in GRADIENTS:
            raise ValueError(f"unknown gradient method '{gradient}', expected one of {GRADIENTS}")
        self.C, self.H, self.W = fmap.shape
        self.gradient = gradient
        self.table = cell_rows(fmap)  # [H*W, C]

    def _window(self, uv: torch.Tensor, size: int):
        """The ``size`` x ``size`` cells around each pixel's cell of ``uv [N, 2]`` (2: its
        corners, 4: one more on each side), clamped to the map: rows ``P [N, size (y), size (x),
        C]``, their indices ``xs, ys [N, size]``, the bilinear corner weights ``[N, 2, 2]`` and
        ``valid [N]``."""
        x0, y0, wx, wy, valid = _bilinear_cell(uv, self.H, self.W)
        offsets = torch.arange(size, device=uv.device) - (size - 2) // 2
        xs = (x0[:, None] + offsets).clamp(0, self.W - 1)
        ys = (y0[:, None] + offsets).clamp(0, self.H - 1)
        P = gather_rows(self.table, ys[:, :, None] * self.W + xs[:, None, :])
        return P, xs, ys, _corner_weights(wx, wy, P.dtype), valid

    def values(self, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels ``uv [N, 2]`` -> ``(values [N, C], valid [N])``: what :meth:`__call__` returns
        without the gradients, from the 2x2 cell corners alone (a quarter of its gathers)."""
        P, _, _, w, valid = self._window(uv, 2)
        return torch.bmm(w.view(-1, 1, 4), P.view(-1, 4, self.C))[:, 0], valid

    def __call__(self, uv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pixels ``uv [N, 2]`` -> ``(values [N, C], gradients [N, C, 2] (d/du, d/dv), valid [N])``."""
        P, xs, ys, w, valid = self._window(uv, 4)  # P [N, 4 (y), 4 (x), C]; w [N, 2, 2]
        # values and both gradients are linear in the 4x4 neighbourhood: one stencil [N, 3, 4, 4]
        stencil = P.new_zeros((len(P), 3, 4, 4))
        stencil[:, 0, 1:3, 1:3] = w  # the 2x2 cell corners
        if self.gradient == "central":  # (F[x+1] - F[x-1]) / 2, one-sided at the border
            wu = w / (xs[:, 2:] - xs[:, :2]).clamp_min(1).to(P.dtype)[:, None, :]
            wv = w / (ys[:, 2:] - ys[:, :2]).clamp_min(1).to(P.dtype)[:, :, None]
            stencil[:, 1, 1:3, 2:] += wu
            stencil[:, 1, 1:3, :2] -= wu
            stencil[:, 2, 2:, 1:3] += wv
            stencil[:, 2, :2, 1:3] -= wv
        else:  # Sobel / 8 with replicated borders (clamped indices)
            for i, k in enumerate((1.0, 2.0, 1.0)):
                stencil[:, 1, i:i + 2, 2:] += k / 8 * w
                stencil[:, 1, i:i + 2, :2] -= k / 8 * w
                stencil[:, 2, 2:, i:i + 2] += k / 8 * w
                stencil[:, 2, :2, i:i + 2] -= k / 8 * w
        out = torch.bmm(stencil.view(-1, 3, 16), P.view(-1, 16, self.C))  # [N, 3, C]
        return out[:, 0], out[:, 1:].transpose(1, 2), valid


def _corner_weights(wx: torch.Tensor, wy: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bilinear weights [N, 2 (y), 2 (x)] of the cell corners from the fractions ``wx, wy [N]``."""
    wx, wy = wx.to(dtype), wy.to(dtype)
    return torch.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], -1).view(-1, 2, 2)
