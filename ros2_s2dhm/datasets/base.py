"""Dataset records shared by the readers: reference images with 2D-3D observations, queries, images."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..errors import DatasetError
from ..geometry.camera import Camera
from ..geometry.pose import Pose

__all__ = ["ReferenceImage", "QueryImage", "Dataset", "DatasetError", "read_image", "image_size"]


@dataclass
class ReferenceImage:
    """A mapped image: ``name`` relative to the image root (e.g. ``overcast-reference/rear/1.jpg``),
    world-to-camera ``pose``, ``keypoints`` [M, 2] float64 OpenCV pixels observing ``point_ids``
    [M] int64 (rows of :attr:`Dataset.points3d`)."""

    name: str
    path: Path
    camera: Camera
    pose: Pose
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


@dataclass
class QueryImage:
    """An image to localize: ``name`` as in submission files (``rear/1.jpg`` or the CMU basename)."""

    name: str
    path: Path
    camera: Camera
    condition: str


@dataclass
class Dataset:
    """References with their 3D points [P, 3] float64 (world frame) and queries. ``unit``: the
    unit of length of poses and points (``m``; an SfM model without scale: e.g. ``sfm``)."""

    name: str
    root: Path
    references: list[ReferenceImage]
    points3d: np.ndarray
    queries: list[QueryImage]
    unit: str = "m"

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, root={str(self.root)!r}, {len(self.references)} references, "
                f"{len(self.points3d)} points, {len(self.queries)} queries)")


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 [H, W, 3]; raises DatasetError if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: image file not found")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"{path}: not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, read from its header; raises DatasetError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except FileNotFoundError:
        raise DatasetError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as error:
        raise DatasetError(f"{path}: not a readable image ({error})") from None
