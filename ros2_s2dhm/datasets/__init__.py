"""Datasets: RobotCar Seasons and Extended CMU Seasons readers, hloc query lists, correspondences, synthetic sets."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import DatasetError
from .base import Dataset, QueryImage, ReferenceImage, image_size, read_image

__all__ = ["Dataset", "DatasetError", "QueryImage", "ReferenceImage", "image_size", "read_image", "load_dataset"]


def load_dataset(root: str | Path, conditions: Sequence[str] | None = None) -> Dataset:
    """Load a dataset folder, choosing the reader by its layout.

    ``images/`` -> RobotCar Seasons layout (also the synthetic sets; ``conditions`` selects queries);
    ``sparse/`` with ``database/`` or ``query/`` -> an Extended CMU Seasons slice.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    if (root / "images").is_dir():
        from .robotcar import load_robotcar_seasons
        return load_robotcar_seasons(root, conditions=list(conditions) if conditions else None)
    if (root / "sparse").is_dir() and ((root / "database").is_dir() or (root / "query").is_dir()):
        from .cmu import load_cmu_slice
        return load_cmu_slice(root)
    raise DatasetError(f"{root}: unknown dataset layout; expected images/ (RobotCar Seasons layout) "
                       "or sparse/ with database/ and query/ (Extended CMU Seasons slice)")
