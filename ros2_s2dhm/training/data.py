"""Image-pair dataset over correspondence files for backbone fine-tuning.

Each ``.mat`` file (see ``ros2_s2dhm.datasets.correspondences``) names two images;
they are resolved against an image root, resized (longer side ``image_size``),
normalised for VGG-16, and the correspondences are moved to the resized pixels.
The condition of an image is the first folder of its path relative to the image
root (RobotCar Seasons layout ``<condition>/<camera>/<timestamp>.jpg``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Iterable, Sequence

import numpy as np
import torch

from ros2_s2dhm.datasets.base import read_image
from ros2_s2dhm.datasets.correspondences import read_correspondences_mat
from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.features.preprocess import prepare_image
from ros2_s2dhm.geometry.pixels import scale_pixels

__all__ = [
    "PairSample", "CorrespondencePairDataset", "find_correspondence_files", "resolve_image_path",
    "parse_condition_pairs", "condition_of",
]

logger = logging.getLogger(__name__)

WILDCARD = "*"


def find_correspondence_files(sources: Iterable[str | Path]) -> list[Path]:
    """Sorted ``.mat`` files from files and directories (searched recursively)."""
    files: list[Path] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            files.extend(sorted(source.rglob("*.mat")))
        elif source.is_file():
            files.append(source)
        else:
            raise DatasetError(f"{source}: correspondence file or directory not found")
    if not files:
        raise DatasetError(f"no .mat correspondence files in {', '.join(str(s) for s in sources)}")
    return sorted(set(files))


def resolve_image_path(stored: str, images_root: Path, source: Path | None = None) -> tuple[Path, str]:
    """Find the image a correspondence file names.

    Tries the stored path as is (when absolute), then ``images_root`` joined with the
    stored path and with its shorter and shorter suffixes (files written on another
    machine carry that machine's prefix). Returns (path, name relative to the root).
    """
    parts = PurePath(stored.replace("\\", "/")).parts
    for start in range(len(parts)):
        relative = PurePath(*parts[start:])
        if relative.is_absolute():
            continue
        candidate = images_root / relative
        if candidate.is_file():
            return candidate, relative.as_posix()
    absolute = Path(stored)
    if absolute.is_absolute() and absolute.is_file():
        try:
            return absolute, absolute.relative_to(images_root).as_posix()
        except ValueError:
            return absolute, absolute.name
    where = f"{source}: field 'im_i_path'/'im_j_path'" if source else "image path"
    raise DatasetError(f"{where}: image {stored!r} not found under {images_root}")


def condition_of(name: str) -> str:
    """Condition of an image name relative to the image root (its first folder)."""
    parts = PurePath(name).parts
    return parts[0] if len(parts) > 1 else ""


def parse_condition_pairs(specs: Sequence[str] | None) -> list[tuple[str, str]] | None:
    """Parse ``["overcast-reference:night", "dawn:*"]`` into unordered condition pairs."""
    if not specs:
        return None
    pairs = []
    for spec in specs:
        left, sep, right = spec.partition(":")
        if not sep or not left or not right:
            raise DatasetError(f"condition pair {spec!r}: expected 'CONDITION_A:CONDITION_B' ('*' = any)")
        pairs.append((left, right))
    return pairs


def _pair_allowed(cond_i: str, cond_j: str, pairs: list[tuple[str, str]] | None) -> bool:
    if pairs is None:
        return True

    def match(pattern: str, value: str) -> bool:
        return pattern == WILDCARD or pattern == value

    return any((match(a, cond_i) and match(b, cond_j)) or (match(a, cond_j) and match(b, cond_i))
               for a, b in pairs)


@dataclass
class PairSample:
    """One training pair. images: [3, h, w] float32 (ImageNet-normalised);
    points: (N, 2) float32 pixels of the resized images; names relative to the root."""

    image_i: torch.Tensor
    image_j: torch.Tensor
    pt_i: torch.Tensor
    pt_j: torch.Tensor
    name_i: str
    name_j: str


@dataclass(frozen=True)
class _PairEntry:
    source: Path
    path_i: Path
    path_j: Path
    name_i: str
    name_j: str


class CorrespondencePairDataset(torch.utils.data.Dataset):
    """Pairs of images with their correspondences, optionally restricted to condition pairs.

    mat_files: correspondence files; images_root: folder the image paths resolve against;
    image_size: longer side of the resized images; condition_pairs: unordered
    (condition_a, condition_b) pairs to keep (``None`` keeps all); min_correspondences:
    files with fewer correspondences are skipped.
    """

    def __init__(self, mat_files: Sequence[str | Path], images_root: str | Path, image_size: int = 512,
                 condition_pairs: list[tuple[str, str]] | None = None, min_correspondences: int = 8):
        self.images_root = Path(images_root)
        if not self.images_root.is_dir():
            raise DatasetError(f"{self.images_root}: image root folder not found")
        self.image_size = int(image_size)
        self.min_correspondences = int(min_correspondences)
        self.entries: list[_PairEntry] = []
        for mat in mat_files:
            data = read_correspondences_mat(mat)
            if len(data) < self.min_correspondences:
                logger.warning("%s: only %d correspondences, skipped", mat, len(data))
                continue
            path_i, name_i = resolve_image_path(data.image_i, self.images_root, Path(mat))
            path_j, name_j = resolve_image_path(data.image_j, self.images_root, Path(mat))
            if _pair_allowed(condition_of(name_i), condition_of(name_j), condition_pairs):
                self.entries.append(_PairEntry(Path(mat), path_i, path_j, name_i, name_j))
        if not self.entries:
            raise DatasetError(
                f"no correspondence pair left after the condition filter {condition_pairs} "
                f"({len(mat_files)} files under {self.images_root})")

    def __len__(self) -> int:
        return len(self.entries)

    def _load(self, path: Path) -> tuple[torch.Tensor, tuple[float, float], tuple[int, int]]:
        image = read_image(path)
        tensor, scale = prepare_image(image, self.image_size, "cpu")
        return tensor[0], scale, (tensor.shape[3], tensor.shape[2])

    def __getitem__(self, index: int) -> PairSample:
        entry = self.entries[index]
        data = read_correspondences_mat(entry.source)
        image_i, scale_i, (w_i, h_i) = self._load(entry.path_i)
        image_j, scale_j, (w_j, h_j) = self._load(entry.path_j)
        pt_i = scale_pixels(data.pt_i, np.asarray(scale_i))
        pt_j = scale_pixels(data.pt_j, np.asarray(scale_j))
        inside = ((pt_i >= -0.5).all(1) & (pt_i[:, 0] <= w_i - 0.5) & (pt_i[:, 1] <= h_i - 0.5)
                  & (pt_j >= -0.5).all(1) & (pt_j[:, 0] <= w_j - 0.5) & (pt_j[:, 1] <= h_j - 0.5))
        if not inside.any():
            raise DatasetError(f"{entry.source}: no correspondence inside both images "
                               f"({entry.path_i}, {entry.path_j})")
        return PairSample(image_i, image_j, torch.from_numpy(pt_i[inside]).float(),
                          torch.from_numpy(pt_j[inside]).float(), entry.name_i, entry.name_j)
