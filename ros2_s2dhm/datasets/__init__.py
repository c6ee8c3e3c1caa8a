"""Datasets: RobotCar Seasons and Extended CMU Seasons readers, hloc query lists, correspondences, synthetic sets."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..errors import DatasetError
from .base import Dataset, QueryImage, ReferenceImage, image_size, read_image

__all__ = ["Dataset", "DatasetError", "QueryImage", "ReferenceImage", "image_size", "read_image", "load_dataset",
           "FORMATS"]


#: Layouts load_dataset reads (``auto`` chooses by what is in the folder).
FORMATS = ("auto", "colmap", "robotcar", "cmu")


def load_dataset(root: str | Path, conditions: Sequence[str] | None = None,
                 format: str = "auto", warn_unit: bool = True) -> Dataset:
    """Load a dataset folder with the reader of its layout.

    ``colmap``: ``sparse/`` + ``images/`` (+ ``queries_with_intrinsics.txt``), any COLMAP model
    (:mod:`.colmap_layout`); ``robotcar``: ``images/`` in the RobotCar Seasons layout (also the
    synthetic sets; ``conditions`` selects queries); ``cmu``: ``sparse/`` with ``database/`` or
    ``query/`` (an Extended CMU Seasons slice). ``auto`` tries them in that order.
    ``warn_unit``: warn about a unit other than ``m`` (a caller that warns itself turns it off).
    """
    root = Path(root)
    if format not in FORMATS:
        raise DatasetError(f"unknown dataset format {format!r}; use one of {FORMATS}")
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder does not exist")
    from .colmap_layout import is_colmap_layout, load_colmap_layout

    if format == "colmap" or (format == "auto" and is_colmap_layout(root)):
        return load_colmap_layout(root, warn_unit)
    if format == "robotcar" or (format == "auto" and (root / "images").is_dir()):
        from .robotcar import load_robotcar_seasons
        return load_robotcar_seasons(root, conditions=list(conditions) if conditions else None)
    if format == "cmu" or (format == "auto" and (root / "sparse").is_dir()
                           and ((root / "database").is_dir() or (root / "query").is_dir())):
        from .cmu import load_cmu_slice
        return load_cmu_slice(root)
    raise DatasetError(f"{root}: unknown dataset layout; expected sparse/ + images/ (a COLMAP "
                       "model, see datasets/colmap_layout.py), images/ (RobotCar Seasons layout) "
                       "or sparse/ with database/ and query/ (Extended CMU Seasons slice)")
