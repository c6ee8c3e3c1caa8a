"""Cross-season pixel correspondence files (Larsson et al., MATLAB v7.3 = HDF5).

One file holds the correspondences of one image pair. Its HDF5 datasets, as
MATLAB writes them (MATLAB arrays are stored transposed):

- ``im_i_path``, ``im_j_path``: the image paths as uint16 character codes,
  HDF5 shape ``(L, 1)`` (a MATLAB ``1 x L`` char row);
- ``pt_i``, ``pt_j``: float64, HDF5 shape ``(N, 2)`` (MATLAB ``2 x N``), one
  ``(x, y)`` row per correspondence;
- ``dist_from_center``: float64, HDF5 shape ``(1, N)`` (MATLAB ``N x 1``).

The public training code of the dataset authors indexes pixels with
``int(pt + 0.5)`` and keeps points with ``0 <= pt < size - 0.5``: the file
coordinates are 0-based with the centre of the top-left pixel at (0, 0), which is
the OpenCV convention used in memory, so no pixel conversion is applied.

The writer adds the 512-byte MATLAB v7.3 header and the ``MATLAB_class``
attributes, so MATLAB's ``load`` reads the files it writes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ros2_s2dhm.errors import DatasetError

__all__ = ["CorrespondenceFile", "read_correspondences_mat", "write_correspondences_mat"]

_USERBLOCK_SIZE = 512
_MATLAB_HEADER_TEXT = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created by: ros2_s2dhm HDF5 schema 1.00 ."


@dataclass(frozen=True)
class CorrespondenceFile:
    """Correspondences of one image pair (pixels in OpenCV convention).

    image_i, image_j: image paths as stored in the file (resolved by the caller);
    pt_i, pt_j: (N, 2) float64 pixel coordinates (x, y) in image i and image j;
    dist_from_center: (N,) float64, as stored (the dataset uses it as a weight).
    """

    image_i: str
    image_j: str
    pt_i: np.ndarray
    pt_j: np.ndarray
    dist_from_center: np.ndarray

    def __len__(self) -> int:
        return int(self.pt_i.shape[0])


def _decode_chars(dataset: h5py.Dataset, path: Path, field: str) -> str:
    codes = np.asarray(dataset[()]).reshape(-1)
    if codes.dtype.kind not in "ui":
        raise DatasetError(f"{path}: field '{field}' must hold uint16 character codes, got dtype {codes.dtype}")
    return "".join(chr(int(c)) for c in codes)


def _points(dataset: h5py.Dataset, path: Path, field: str) -> np.ndarray:
    array = np.asarray(dataset[()], dtype=np.float64)
    if array.ndim != 2 or 2 not in array.shape:
        raise DatasetError(f"{path}: field '{field}' must be a 2 x N MATLAB array, got HDF5 shape {array.shape}")
    if array.shape[1] != 2:  # written untransposed by another tool: (2, N)
        array = array.T
    return np.ascontiguousarray(array)


def read_correspondences_mat(path: str | Path) -> CorrespondenceFile:
    """Read one correspondence file; raises DatasetError naming the path and field."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: correspondence file not found")
    if not h5py.is_hdf5(path):
        raise DatasetError(f"{path}: not a MATLAB v7.3 (HDF5) file; re-save it in MATLAB with save(..., '-v7.3')")
    with h5py.File(path, "r") as handle:
        for field in ("im_i_path", "im_j_path", "pt_i", "pt_j", "dist_from_center"):
            if field not in handle:
                raise DatasetError(f"{path}: missing field '{field}' (found {sorted(handle.keys())})")
        image_i = _decode_chars(handle["im_i_path"], path, "im_i_path")
        image_j = _decode_chars(handle["im_j_path"], path, "im_j_path")
        pt_i = _points(handle["pt_i"], path, "pt_i")
        pt_j = _points(handle["pt_j"], path, "pt_j")
        dist = np.asarray(handle["dist_from_center"][()], dtype=np.float64).reshape(-1)
    if pt_i.shape != pt_j.shape:
        raise DatasetError(f"{path}: fields 'pt_i' {pt_i.shape} and 'pt_j' {pt_j.shape} differ in size")
    if dist.shape[0] != pt_i.shape[0]:
        raise DatasetError(f"{path}: field 'dist_from_center' has {dist.shape[0]} values for {pt_i.shape[0]} points")
    if not (np.isfinite(pt_i).all() and np.isfinite(pt_j).all()):
        raise DatasetError(f"{path}: fields 'pt_i'/'pt_j' contain NaN or inf")
    return CorrespondenceFile(image_i, image_j, pt_i, pt_j, dist)


def _write_chars(handle: h5py.File, field: str, text: str) -> None:
    ords = [ord(c) for c in text]
    if any(o > 0xFFFF for o in ords):
        raise DatasetError(f"field '{field}': path {text!r} has characters outside uint16")
    codes = np.array(ords, dtype=np.uint16).reshape(-1, 1)
    dataset = handle.create_dataset(field, data=codes)
    dataset.attrs["MATLAB_class"] = np.bytes_("char")
    dataset.attrs["MATLAB_int_decode"] = np.int32(2)


def _write_double(handle: h5py.File, field: str, array: np.ndarray) -> None:
    dataset = handle.create_dataset(field, data=np.ascontiguousarray(array, dtype=np.float64))
    dataset.attrs["MATLAB_class"] = np.bytes_("double")


def _matlab_header() -> bytes:
    text = _MATLAB_HEADER_TEXT.ljust(116, b" ")
    # 8-byte subsystem offset, version 0x0200, endian indicator 'IM'
    return text + b" " * 8 + b"\x00\x02" + b"IM"


def write_correspondences_mat(path: str | Path, image_i: str, image_j: str, pt_i: np.ndarray,
                              pt_j: np.ndarray, dist_from_center: np.ndarray) -> Path:
    """Write one correspondence file in the public layout; returns the path.

    pt_i, pt_j: (N, 2) pixel coordinates (OpenCV convention); dist_from_center: (N,).
    """
    path = Path(path)
    pt_i = np.asarray(pt_i, dtype=np.float64)
    pt_j = np.asarray(pt_j, dtype=np.float64)
    dist = np.asarray(dist_from_center, dtype=np.float64).reshape(-1)
    if pt_i.ndim != 2 or pt_i.shape[1] != 2 or pt_i.shape != pt_j.shape:
        raise DatasetError(f"{path}: 'pt_i' {pt_i.shape} and 'pt_j' {pt_j.shape} must both be (N, 2)")
    if dist.shape[0] != pt_i.shape[0]:
        raise DatasetError(f"{path}: 'dist_from_center' has {dist.shape[0]} values for {pt_i.shape[0]} points")
    if not (np.isfinite(pt_i).all() and np.isfinite(pt_j).all()):
        raise DatasetError(f"{path}: 'pt_i'/'pt_j' contain NaN or inf")
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=_USERBLOCK_SIZE, libver="earliest") as handle:
        _write_chars(handle, "im_i_path", str(image_i))
        _write_chars(handle, "im_j_path", str(image_j))
        _write_double(handle, "pt_i", pt_i)  # (N, 2) in HDF5 = MATLAB 2 x N
        _write_double(handle, "pt_j", pt_j)
        _write_double(handle, "dist_from_center", dist.reshape(1, -1))  # MATLAB N x 1
    with open(path, "r+b") as raw:
        raw.write(_matlab_header())
    return path
