"""Image preparation for the VGG-16 backbone: resize, ImageNet normalisation, upload."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ros2_s2dhm.errors import InputImageError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "InputImageError", "check_image", "prepare_image",
           "resized_shape"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_image(image: np.ndarray) -> None:
    """Raise :class:`InputImageError` unless ``image`` is a non-empty HxWx3 uint8 array."""
    if not isinstance(image, np.ndarray):
        raise InputImageError(f"image: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputImageError(
            f"image: expected shape (H, W, 3) RGB, got {image.shape}; convert grayscale/RGBA/Bayer "
            "images to RGB first")
    if image.dtype != np.uint8:
        raise InputImageError(f"image: expected dtype uint8, got {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InputImageError(f"image: empty image of shape {image.shape}")


def resized_shape(width: int, height: int, image_size: int) -> tuple[int, int]:
    """(new_w, new_h) with the longer side equal to ``image_size`` (aspect ratio kept, >= 1 px)."""
    if int(image_size) <= 0:
        raise ValueError(f"image_size: expected a positive integer, got {image_size}")
    factor = image_size / max(width, height)
    return max(1, round(width * factor)), max(1, round(height * factor))


def prepare_image(image: np.ndarray, image_size: int = 512,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, tuple[float, float]]:
    """Resize an RGB image so its longer side is ``image_size`` and normalise it for VGG-16.

    Args:
        image: HxWx3 uint8 RGB array.
        image_size: target length of the longer side in pixels.
        device: where the returned tensor lives.
    Returns:
        tensor [1, 3, h, w] float32, ImageNet mean/std normalised;
        scale (new_w / old_w, new_h / old_h), to be used with ``geometry.pixels.scale_pixels``.
    Raises:
        InputImageError: wrong ndim, channel count, dtype or an empty image.
    """
    check_image(image)
    height, width = image.shape[:2]
    new_w, new_h = resized_shape(width, height, image_size)
    if (new_w, new_h) != (width, height):
        shrinking = new_w * new_h < width * height
        image = cv2.resize(np.ascontiguousarray(image), (new_w, new_h),
                           interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    tensor = torch.from_numpy(np.ascontiguousarray(image)).to(device)
    tensor = tensor.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=tensor.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=tensor.device).view(1, 3, 1, 1)
    tensor = (tensor - mean) / std
    return tensor.contiguous(), (new_w / width, new_h / height)
