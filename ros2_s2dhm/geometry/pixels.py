"""Pixel-coordinate conventions: the only place where image resizing and feature strides map pixels.

OpenCV convention: the centre of the top-left pixel is (0, 0) and the image spans
``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. Resizing an image by factor ``s`` (new / old) maps
``u -> (u + 0.5) * s - 0.5``; a feature map of stride ``stride`` is a resize by ``1 / stride``.
All functions accept numpy arrays and torch tensors ``[..., 2]`` (or scalars) and return the same type.
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np
import torch

Array = Union[np.ndarray, torch.Tensor, float]
Scale = Union[float, Sequence[float], np.ndarray, torch.Tensor]

__all__ = ["scale_pixels", "image_to_feature", "feature_to_image"]


def _as_like(scale: Scale, uv: Array):
    if isinstance(uv, torch.Tensor):
        return torch.as_tensor(scale, dtype=uv.dtype, device=uv.device)
    if isinstance(scale, (int, float)):
        return float(scale)
    return np.asarray(scale, dtype=np.float64)


def scale_pixels(uv: Array, scale: Scale) -> Array:
    """Pixel coordinates after resizing the image by ``scale`` (scalar or (sx, sy), new / old)."""
    return (uv + 0.5) * _as_like(scale, uv) - 0.5


def image_to_feature(uv: Array, stride: float) -> Array:
    """Image pixel coordinates -> coordinates in a feature map of the given stride."""
    return scale_pixels(uv, 1.0 / stride)


def feature_to_image(uv: Array, stride: float) -> Array:
    """Feature-map coordinates (given stride) -> image pixel coordinates."""
    return scale_pixels(uv, float(stride))
