"""RobotCar Seasons layout: NVM model, camera intrinsics files and the dataset loader.

Layout (also written by :mod:`.synthetic`)::

    images/<condition>/<camera>/<timestamp>.jpg
    intrinsics/<camera>_intrinsics.txt          lines "fx v", "fy v", "cx v", "cy v"
    3D-models/all-merged/all.nvm               reference cameras + triangulated points

NVM_V3 cameras are ``name f qw qx qy qz Cx Cy Cz k 0`` (q world-to-camera, C camera centre);
points are ``X Y Z R G B n (image feature x y)*n`` with x, y relative to the image centre:
``u_opencv = x + w / 2 - 0.5`` (:func:`nvm_to_pixels`). VisualSFM names the ``.jpg`` files ``.png``.
The intrinsics files are read with COLMAP's pixel convention (principal point of the top-left
pixel centre at (0.5, 0.5)), as hloc does with the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from ..errors import CameraError, DatasetError
from ..geometry.camera import Camera
from ..geometry.pose import Pose
from .base import Dataset, QueryImage, ReferenceImage, image_size

__all__ = ["NVMCamera", "NVMModel", "read_nvm", "write_nvm", "nvm_to_pixels", "pixels_to_nvm",
           "read_intrinsics", "write_intrinsics", "load_robotcar_seasons", "NVM_RELATIVE_PATH"]

NVM_RELATIVE_PATH = Path("3D-models") / "all-merged" / "all.nvm"
_INTRINSICS_KEYS = ("fx", "fy", "cx", "cy")


def nvm_to_pixels(xy: np.ndarray, width: int, height: int) -> np.ndarray:
    """NVM centre-relative coordinates (N, 2) -> OpenCV pixels (N, 2)."""
    return np.asarray(xy, np.float64) + np.array([width / 2 - 0.5, height / 2 - 0.5])


def pixels_to_nvm(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """OpenCV pixels (N, 2) -> NVM centre-relative coordinates (N, 2)."""
    return np.asarray(uv, np.float64) - np.array([width / 2 - 0.5, height / 2 - 0.5])


@dataclass
class NVMCamera:
    """One NVM camera: image name as stored, focal length (pixels), world-to-camera pose, radial k."""

    name: str
    focal: float
    pose: Pose
    radial: float = 0.0


@dataclass
class NVMModel:
    """An NVM_V3 model. Observations are flat arrays of length K: point index, image index, feature
    index and centre-relative coordinates ``obs_xy`` (K, 2). ``colors`` (P, 3) uint8."""

    cameras: list[NVMCamera]
    points: np.ndarray
    colors: np.ndarray
    obs_point: np.ndarray
    obs_image: np.ndarray
    obs_feature: np.ndarray
    obs_xy: np.ndarray

    @classmethod
    def from_pixels(cls, cameras: list[NVMCamera], image_sizes: Sequence[tuple[int, int]], points: np.ndarray,
                    colors: np.ndarray, obs_point: np.ndarray, obs_image: np.ndarray,
                    obs_uv: np.ndarray) -> "NVMModel":
        """Build a model from OpenCV-pixel observations; feature indices are numbered per image."""
        obs_point, obs_image = np.asarray(obs_point, np.int64), np.asarray(obs_image, np.int64)
        sizes = np.asarray(image_sizes, np.float64).reshape(-1, 2)[obs_image]
        obs_xy = np.asarray(obs_uv, np.float64) - (sizes / 2 - 0.5)
        order = np.argsort(obs_image, kind="stable")
        feature = np.empty(len(obs_image), np.int64)
        counts = np.bincount(obs_image, minlength=len(cameras))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        feature[order] = np.arange(len(order)) - np.repeat(starts, counts)
        return cls(cameras, np.asarray(points, np.float64), np.asarray(colors, np.uint8), obs_point, obs_image,
                   feature, obs_xy)

    def observations_of(self, image_index: int) -> tuple[np.ndarray, np.ndarray]:
        """(point indices (M,), centre-relative xy (M, 2)) observed in one image."""
        sel = self.obs_image == image_index
        return self.obs_point[sel], self.obs_xy[sel]


def _num(value) -> str:
    """Shortest text that reads back to the same float64."""
    return repr(float(value))


def _fail(path: Path, line: int, what: str) -> DatasetError:
    return DatasetError(f"{path}:{line}: {what}")


def _parse_points_slow(path: Path, lines: list[str], first: int, n_points: int, n_cameras: int):
    """Line-by-line point parser; raises DatasetError naming the first bad line and field."""
    points, colors, blocks, counts = np.zeros((n_points, 3)), np.zeros((n_points, 3), np.uint8), [], []
    for p in range(n_points):
        number = first + p + 1
        tokens = lines[first + p].split()
        try:
            n_obs = int(tokens[6])
        except (ValueError, IndexError):
            raise _fail(path, number, f"point {p}: expected 'X Y Z R G B n (image feature x y)*n'") from None
        if n_obs < 0 or len(tokens) != 7 + 4 * n_obs:
            raise _fail(path, number, f"point {p}: {n_obs} observations need {7 + 4 * n_obs} fields, got {len(tokens)}")
        try:
            values = np.array(tokens[:6], np.float64)
            obs = np.array(tokens[7:], np.float64).reshape(n_obs, 4)
        except ValueError:
            raise _fail(path, number, f"point {p}: non-numeric value in 'X Y Z R G B' or observations") from None
        if n_obs and (obs[:, 0].min() < 0 or obs[:, 0].max() >= n_cameras):
            raise _fail(path, number, f"point {p}: field 'image' out of range [0, {n_cameras})")
        points[p], colors[p] = values[:3], np.clip(values[3:6], 0, 255)
        blocks.append(obs)
        counts.append(n_obs)
    obs = np.concatenate(blocks) if blocks else np.zeros((0, 4))
    return points, colors, np.asarray(counts, np.int64), obs


def _parse_points(path: Path, lines: list[str], first: int, n_points: int, n_cameras: int):
    """Points block -> (points (P, 3), colors (P, 3) uint8, counts (P,), obs (K, 4)); fast path in C."""
    block = lines[first:first + n_points]
    if len(block) < n_points:
        raise DatasetError(f"{path}: file ends inside the point list ({len(block)} of {n_points})")
    values = np.fromstring(" ".join(block), dtype=np.float64, sep=" ") if block else np.zeros(0)
    starts = np.empty(n_points, np.int64)
    pos, size = 0, len(values)
    for p in range(n_points):  # walk the variable-length records
        if pos + 7 > size:
            break
        starts[p] = pos
        pos += 7 + 4 * int(values[pos + 6])
    else:
        if pos == size:
            counts = values[starts + 6].astype(np.int64)
            if np.all(counts >= 0) and np.array_equal(counts, values[starts + 6]):
                offsets = np.repeat(starts + 7 - 4 * np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
                flat = offsets + 4 * np.arange(int(counts.sum()))
                obs = values[flat[:, None] + np.arange(4)] if len(flat) else np.zeros((0, 4))
                if len(obs) == 0 or (obs[:, 0].min() >= 0 and obs[:, 0].max() < n_cameras):
                    xyz = values[starts[:, None] + np.arange(3)]
                    rgb = np.clip(values[starts[:, None] + np.arange(3, 6)], 0, 255).astype(np.uint8)
                    if np.all(np.isfinite(xyz)):
                        return xyz, rgb, counts, obs
    return _parse_points_slow(path, lines, first, n_points, n_cameras)


def read_nvm(path: str | Path) -> NVMModel:
    """Read the first model of an NVM_V3 file; raises DatasetError naming path, line and field."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: NVM model not found")
    lines = path.read_text().splitlines()
    pos = 0

    def next_tokens(what: str) -> list[str]:
        nonlocal pos
        while pos < len(lines) and not lines[pos].strip():
            pos += 1
        if pos >= len(lines):
            raise DatasetError(f"{path}: file ends before the {what}")
        pos += 1
        return lines[pos - 1].split()

    if not next_tokens("header")[0].startswith("NVM_V3"):
        raise DatasetError(f"{path}:{pos}: expected the header 'NVM_V3'")

    def count(field: str) -> int:
        tokens = next_tokens(field)
        if tokens[0].startswith("FixedK"):  # optional shared calibration line
            tokens = next_tokens(field)
        try:
            return int(tokens[0])
        except ValueError:
            raise _fail(path, pos, f"field '{field}': expected an integer, got {tokens[0]!r}") from None

    n_cameras = count("number of cameras")
    cameras = []
    for _ in range(n_cameras):
        tokens = next_tokens(f"camera list ({len(cameras)} of {n_cameras} read)")
        if len(tokens) < 10:
            raise _fail(path, pos, f"camera line needs 'name f qw qx qy qz Cx Cy Cz k 0', got {len(tokens)} fields")
        try:
            values = np.array(tokens[1:10], np.float64)
        except ValueError:
            raise _fail(path, pos, f"camera '{tokens[0]}': non-numeric value in f/q/C/k fields") from None
        if not np.all(np.isfinite(values)) or values[0] <= 0 or np.linalg.norm(values[1:5]) < 1e-9:
            raise _fail(path, pos, f"camera '{tokens[0]}': focal must be > 0 and quaternion non-zero")
        R = Pose.from_quaternion(values[1:5], np.zeros(3)).R
        cameras.append(NVMCamera(tokens[0], float(values[0]), Pose.from_center(R, values[5:8]), float(values[8])))
    while pos < len(lines) and not lines[pos].strip():
        pos += 1
    n_points = count("number of points") if pos < len(lines) else 0
    while pos < len(lines) and not lines[pos].strip():
        pos += 1
    points, colors, counts, obs = _parse_points(path, lines, pos, n_points, n_cameras)
    return NVMModel(cameras, points, colors, np.repeat(np.arange(n_points), counts),
                    obs[:, 0].astype(np.int64), obs[:, 1].astype(np.int64), obs[:, 2:4].copy())


def write_nvm(path: str | Path, model: NVMModel) -> Path:
    """Write ``model`` as NVM_V3 (full float precision); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = ["NVM_V3", "", str(len(model.cameras))]
    for cam in model.cameras:
        q = cam.pose.quaternion_wxyz()
        c = cam.pose.center
        out.append(" ".join([cam.name] + [_num(v) for v in (cam.focal, *q, *c, cam.radial)] + ["0"]))
    out += ["", str(len(model.points))]
    order = np.argsort(model.obs_point, kind="stable")
    counts = np.bincount(model.obs_point, minlength=len(model.points))
    ends = np.cumsum(counts)
    for p in range(len(model.points)):
        sel = order[ends[p] - counts[p]:ends[p]]
        X, rgb = model.points[p], model.colors[p]
        obs = " ".join(f"{int(i)} {int(f)} {x!r} {y!r}" for i, f, (x, y) in
                       zip(model.obs_image[sel], model.obs_feature[sel], model.obs_xy[sel].tolist()))
        out.append(f"{_num(X[0])} {_num(X[1])} {_num(X[2])} {int(rgb[0])} {int(rgb[1])} {int(rgb[2])} "
                   f"{len(sel)} {obs}".rstrip())
    out += ["", "0", ""]
    path.write_text("\n".join(out))
    return path


def read_intrinsics(path: str | Path) -> dict[str, float]:
    """Read ``fx``, ``fy``, ``cx``, ``cy`` from a RobotCar intrinsics file (values as written)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: intrinsics file not found")
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) != 2 or tokens[0] not in _INTRINSICS_KEYS:
            raise _fail(path, number, f"expected '<{'|'.join(_INTRINSICS_KEYS)}> <value>', got {line.strip()!r}")
        try:
            values[tokens[0]] = float(tokens[1])
        except ValueError:
            raise _fail(path, number, f"field '{tokens[0]}': not a number: {tokens[1]!r}") from None
    missing = [k for k in _INTRINSICS_KEYS if k not in values]
    if missing:
        raise DatasetError(f"{path}: missing field(s) {missing}")
    return values


def write_intrinsics(path: str | Path, camera: Camera) -> Path:
    """Write a pinhole camera as a RobotCar intrinsics file (COLMAP pixel convention)."""
    path = Path(path)
    if camera.has_distortion:
        raise DatasetError(f"{path}: RobotCar intrinsics hold a pinhole camera, got {camera}")
    fx, fy, cx, cy = camera.opencv_params()[:4]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"fx {_num(fx)}\nfy {_num(fy)}\ncx {_num(cx + 0.5)}\ncy {_num(cy + 0.5)}\n")
    return path


def camera_from_intrinsics(values: dict[str, float], width: int, height: int, path: Path) -> Camera:
    """PINHOLE camera from intrinsics file values and the image size."""
    try:
        return Camera.from_colmap("PINHOLE", width, height, [values[k] for k in _INTRINSICS_KEYS])
    except CameraError as error:
        raise DatasetError(f"{path}: invalid intrinsics ({error})") from None


def _clean_name(stored: str) -> str:
    """NVM image name -> name relative to images/ (drop './', use forward slashes)."""
    name = stored.replace("\\", "/")
    while name.startswith("./"):
        name = name[2:]
    return name


def _resolve_image(images: Path, name: str, nvm: Path) -> tuple[str, Path]:
    """Existing image for an NVM name: as stored, or with .jpg for VisualSFM's .png."""
    candidates = [name]
    stem, suffix = name.rsplit(".", 1) if "." in name else (name, "")
    if suffix.lower() == "png":
        candidates.insert(0, f"{stem}.jpg")
    for candidate in candidates:
        if (images / candidate).is_file():
            return candidate, images / candidate
    raise DatasetError(f"{nvm}: image {name!r} of the model not found under {images} (tried {candidates})")


class _Cameras:
    """Per camera-folder intrinsics with the size of the first image seen."""

    def __init__(self, root: Path):
        self.root = root
        self.cache: dict[str, Camera] = {}

    def get(self, camera_name: str, image_path: Path) -> Camera:
        if camera_name not in self.cache:
            path = self.root / "intrinsics" / f"{camera_name}_intrinsics.txt"
            width, height = image_size(image_path)
            self.cache[camera_name] = camera_from_intrinsics(read_intrinsics(path), width, height, path)
        return self.cache[camera_name]


def load_robotcar_seasons(root: str | Path, reference_condition: str = "overcast-reference",
                          conditions: Sequence[str] | None = None) -> Dataset:
    """Load a RobotCar-Seasons-layout folder (real or synthetic).

    References are the cameras of ``3D-models/all-merged/all.nvm`` with their observations;
    queries are the ``.jpg`` images of ``conditions`` (default: every folder of ``images/``
    except ``reference_condition``), named ``<camera>/<file>`` as in submission files.
    """
    root = Path(root)
    images = root / "images"
    if not images.is_dir():
        raise DatasetError(f"{root}: no images/ folder (expected images/<condition>/<camera>/*.jpg)")
    nvm_path = root / NVM_RELATIVE_PATH
    model = read_nvm(nvm_path)
    cameras = _Cameras(root)
    order = np.argsort(model.obs_image, kind="stable")
    counts = np.bincount(model.obs_image, minlength=len(model.cameras))
    ends = np.cumsum(counts)
    references = []
    for index, nvm_camera in enumerate(model.cameras):
        name, path = _resolve_image(images, _clean_name(nvm_camera.name), nvm_path)
        parts = PurePosixPath(name).parts
        if len(parts) < 2:
            raise DatasetError(f"{nvm_path}: image {nvm_camera.name!r} is not under a <camera>/ folder")
        camera = cameras.get(parts[-2], path)
        sel = order[ends[index] - counts[index]:ends[index]]
        keypoints = nvm_to_pixels(model.obs_xy[sel], camera.width, camera.height)
        references.append(ReferenceImage(name, path, camera, nvm_camera.pose, keypoints,
                                         model.obs_point[sel].astype(np.int64)))
    if conditions is None:
        conditions = sorted(p.name for p in images.iterdir() if p.is_dir() and p.name != reference_condition)
    queries = []
    for condition in conditions:
        folder = images / condition
        if not folder.is_dir():
            raise DatasetError(f"{folder}: query condition folder not found")
        for camera_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            for path in sorted(camera_dir.glob("*.jpg")):
                camera = cameras.get(camera_dir.name, path)
                queries.append(QueryImage(f"{camera_dir.name}/{path.name}", path, camera, condition))
    return Dataset("robotcar_seasons" if root.name == "" else root.name, root, references, model.points, queries)
