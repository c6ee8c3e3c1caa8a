"""Reader of raw Oxford RobotCar sequences (the dataset itself, not RobotCar Seasons).

Layout of one downloaded and extracted sequence (``<sequence>/``)::

    <sequence>/mono_left/<timestamp_us>.png      Bayer mosaic, pattern rggb
    <sequence>/mono_left.timestamps             lines "<timestamp_us> <chunk>"
    <sequence>/stereo/centre/<timestamp_us>.png  Bayer mosaic, pattern gbrg
    <sequence>/stereo.timestamps

Camera models and extrinsics come from the robotcar-dataset-sdk (``models/``,
``extrinsics/``):

* ``<model>.txt``: first line ``fx fy cx cy``, then the 4x4 ``G_camera_image``
  (image/optical frame -> x-forward camera frame), one row per line.
* ``<model>_distortion_lut.bin``: float64, all ``u`` then all ``v`` (planar, 2 x H*W),
  for each pixel of the undistorted image in row-major order the 0-based pixel of
  the distorted image it samples (what the SDK's ``UndistortImage.m`` and
  ``camera_model.py`` use).
* ``extrinsics/<camera>.txt``: ``x y z roll pitch yaw`` (metres, radians),
  ``R = Rz(yaw) Ry(pitch) Rx(roll)`` as the SDK's ``build_se3_transform``.

Model names follow the SDK: mono cameras use their own name, ``stereo/left`` ->
``stereo_wide_left``, ``stereo/right`` -> ``stereo_wide_right``, ``stereo/centre``
-> ``stereo_narrow_left``.

The RobotCar vehicle frame (the stereo camera's) is x forward, y right, z down.
Images are returned demosaiced, RGB, uint8, (H, W, 3).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.geometry.camera import Camera
from ros2_s2dhm.geometry.rotation import euler_rpy_to_matrix

LOG = logging.getLogger(__name__)

MONO_CAMERAS = ("mono_left", "mono_right", "mono_rear")
STEREO_CAMERAS = ("stereo/left", "stereo/centre", "stereo/right")
CAMERAS = MONO_CAMERAS + STEREO_CAMERAS

BAYER_MONO = "rggb"
BAYER_STEREO = "gbrg"

_STEREO_MODELS = {
    "stereo/left": "stereo_wide_left",
    "stereo/right": "stereo_wide_right",
    "stereo/centre": "stereo_narrow_left",
}

_BAYER_CODES = {
    "rggb": cv2.COLOR_BayerRGGB2RGB,
    "gbrg": cv2.COLOR_BayerGBRG2RGB,
    "grbg": cv2.COLOR_BayerGRBG2RGB,
    "bggr": cv2.COLOR_BayerBGGR2RGB,
}

# G_camera_image of the SDK's mono models: optical z -> camera x, optical x -> camera y,
# optical y -> camera z. Used when no camera model is given.
DEFAULT_G_CAMERA_IMAGE = np.array(
    [[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])

# Rotation from the RobotCar vehicle frame (x forward, y right, z down) to a
# REP-103 base frame (x forward, y left, z up): a half turn about x.
R_BASE_FLU_FROM_VEHICLE_FRD = np.diag([1.0, -1.0, -1.0])


def _check_camera(camera: str) -> str:
    camera = camera.strip("/")
    if camera == "stereo":
        camera = "stereo/centre"
    if camera not in CAMERAS:
        raise DatasetError(f"unknown RobotCar camera {camera!r}; expected one of {', '.join(CAMERAS)}")
    return camera


def bayer_pattern(camera: str) -> str:
    """Bayer pattern of a RobotCar camera (``rggb`` mono, ``gbrg`` stereo)."""
    return BAYER_STEREO if _check_camera(camera).startswith("stereo") else BAYER_MONO


def model_name(camera: str) -> str:
    """SDK camera model file stem for a camera directory name (e.g. ``stereo/centre``)."""
    camera = _check_camera(camera)
    return _STEREO_MODELS.get(camera, camera)


def demosaic(raw: np.ndarray, pattern: str) -> np.ndarray:
    """Demosaic a Bayer image (H, W) uint8 with ``pattern`` (rggb, gbrg, grbg, bggr) -> RGB (H, W, 3)."""
    if pattern not in _BAYER_CODES:
        raise DatasetError(f"unknown Bayer pattern {pattern!r}; expected one of {', '.join(_BAYER_CODES)}")
    if raw.ndim != 2 or raw.dtype != np.uint8 or min(raw.shape) < 2:
        raise DatasetError(f"Bayer image must be a 2-D uint8 array of at least 2x2, got {raw.dtype} {raw.shape}")
    return cv2.cvtColor(raw, _BAYER_CODES[pattern])


def mosaic(rgb: np.ndarray, pattern: str) -> np.ndarray:
    """Sample an RGB image (H, W, 3) into a Bayer mosaic (H, W) with ``pattern`` (inverse of :func:`demosaic`)."""
    if pattern not in _BAYER_CODES:
        raise DatasetError(f"unknown Bayer pattern {pattern!r}; expected one of {', '.join(_BAYER_CODES)}")
    channel = {"r": 0, "g": 1, "b": 2}
    out = np.empty(rgb.shape[:2], dtype=rgb.dtype)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        out[dy::2, dx::2] = rgb[dy::2, dx::2, channel[pattern[k]]]
    return out


def read_timestamps(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read a ``<camera>.timestamps`` file -> (timestamps_us [N] int64, chunks [N] int64)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"timestamps file not found: {path}")
    stamps, chunks = [], []
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            stamps.append(int(fields[0]))
            chunks.append(int(fields[1]) if len(fields) > 1 else 0)
        except ValueError:
            raise DatasetError(f"{path}:{lineno}: expected '<timestamp_us> <chunk>', got {line!r}") from None
    return np.asarray(stamps, dtype=np.int64), np.asarray(chunks, dtype=np.int64)


@dataclass(frozen=True)
class RobotCarCameraModel:
    """An SDK camera model.

    fx, fy, cx, cy: pinhole intrinsics of the undistorted image (pixels).
    G_camera_image: (4, 4) transform from the image (optical: x right, y down,
        z forward) frame to the x-forward camera frame.
    lut: (H*W, 2) float64 (u, v) in the distorted image for each undistorted pixel, or None.
    """

    name: str
    fx: float
    fy: float
    cx: float
    cy: float
    G_camera_image: np.ndarray
    lut: np.ndarray | None = None

    @property
    def K(self) -> np.ndarray:
        """(3, 3) calibration matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def undistort(self, image: np.ndarray) -> np.ndarray:
        """Undistort an image (H, W[, C]) through the look-up table (bilinear), same shape and dtype."""
        if self.lut is None:
            raise DatasetError(f"camera model {self.name!r} has no distortion look-up table")
        height, width = image.shape[:2]
        if height * width != self.lut.shape[0]:
            raise DatasetError(
                f"image of {width}x{height} pixels does not match the {self.lut.shape[0]} entries "
                f"of the distortion look-up table of {self.name!r}")
        map_u = self.lut[:, 0].reshape(height, width).astype(np.float32)
        map_v = self.lut[:, 1].reshape(height, width).astype(np.float32)
        return cv2.remap(image, map_u, map_v, interpolation=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def read_camera_model(models_dir: str | Path, camera: str, load_lut: bool = True) -> RobotCarCameraModel:
    """Read ``<models_dir>/<model>.txt`` (and ``<model>_distortion_lut.bin`` when present and ``load_lut``)."""
    name = model_name(camera)
    path = Path(models_dir) / f"{name}.txt"
    if not path.is_file():
        raise DatasetError(f"camera model not found: {path}")
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    try:
        fx, fy, cx, cy = (float(v) for v in rows[0][:4])
        G = np.array([[float(v) for v in row[:4]] for row in rows[1:5]], dtype=np.float64)
    except (ValueError, IndexError):
        raise DatasetError(f"{path}: expected 'fx fy cx cy' then 4 rows of G_camera_image") from None
    if G.shape != (4, 4) or not np.all(np.isfinite(G)) or not np.all(np.isfinite([fx, fy, cx, cy])):
        raise DatasetError(f"{path}: G_camera_image must be 4 finite rows of 4 values, intrinsics finite")
    lut = None
    lut_path = Path(models_dir) / f"{name}_distortion_lut.bin"
    if load_lut and lut_path.is_file():
        values = np.fromfile(lut_path, dtype=np.float64)
        if values.size == 0 or values.size % 2:
            raise DatasetError(f"{lut_path}: expected an even number of float64 values, got {values.size}")
        lut = values.reshape(2, -1).T.copy()
    return RobotCarCameraModel(name, fx, fy, cx, cy, G, lut)


def write_camera_model(models_dir: str | Path, camera: str, fx: float, fy: float, cx: float, cy: float,
                       G_camera_image: np.ndarray, lut: np.ndarray | None = None) -> Path:
    """Write an SDK camera model (and LUT (H*W, 2) when given); returns the ``.txt`` path."""
    name = model_name(camera)
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"{fx:.6f} {fy:.6f} {cx:.6f} {cy:.6f}"]
    lines += [" ".join(f"{v:.6f}" for v in row) for row in np.asarray(G_camera_image, dtype=np.float64)]
    path = models_dir / f"{name}.txt"
    path.write_text("\n".join(lines) + "\n")
    if lut is not None:
        np.ascontiguousarray(np.asarray(lut, dtype=np.float64).T).tofile(models_dir / f"{name}_distortion_lut.bin")
    return path


def read_extrinsics(path: str | Path) -> np.ndarray:
    """Read ``x y z roll pitch yaw`` -> (4, 4) ``build_se3_transform`` matrix of the SDK."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"extrinsics file not found: {path}")
    try:
        values = [float(v) for v in path.read_text().split()[:6]]
    except ValueError:
        raise DatasetError(f"{path}: expected 'x y z roll pitch yaw'") from None
    if len(values) != 6 or not np.all(np.isfinite(values)):
        raise DatasetError(f"{path}: expected 6 finite values 'x y z roll pitch yaw', got {len(values)}")
    T = np.eye(4)
    T[:3, :3] = euler_rpy_to_matrix(*values[3:])
    T[:3, 3] = values[:3]
    return T


@dataclass(frozen=True)
class TimedImage:
    """An image file and its timestamp (µs, from the file name)."""

    timestamp_us: int
    path: Path


class RawSequence:
    """One camera of a raw RobotCar sequence.

    Args:
        sequence_dir: ``<sequence>/`` (holds ``<camera>/`` and ``<camera>.timestamps``).
        camera: ``mono_left``, ``mono_right``, ``mono_rear``, ``stereo/left``, ``stereo/centre``
            (or ``stereo``), ``stereo/right``.
        models_dir: SDK ``models/``; None -> no intrinsics (``camera_model`` is None).
        extrinsics_dir: SDK ``extrinsics/``; None -> camera frame = vehicle frame.
        undistort: undistort through the LUT (requires one in ``models_dir``).
        extrinsics_camera_from_vehicle: the SDK uses the camera extrinsics files as
            ``G_camera_vehicle`` (vehicle points -> camera frame, see
            ``project_laser_into_camera.py`` and robotcar-dataset-sdk issue #22);
            False reads them as the camera pose in the vehicle frame instead.
    """

    def __init__(self, sequence_dir: str | Path, camera: str, models_dir: str | Path | None = None,
                 extrinsics_dir: str | Path | None = None, undistort: bool = True,
                 extrinsics_camera_from_vehicle: bool = True):
        self.sequence_dir = Path(sequence_dir)
        self.camera = _check_camera(camera)
        self.pattern = bayer_pattern(self.camera)
        self.image_dir = self.sequence_dir / self.camera
        if not self.image_dir.is_dir():
            raise DatasetError(f"image folder not found: {self.image_dir}")
        sensor = self.camera.split("/")[0]
        timestamps_path = self.sequence_dir / f"{sensor}.timestamps"
        stamps, _ = read_timestamps(timestamps_path)
        self.frames: list[TimedImage] = []
        missing = 0
        for stamp in stamps.tolist():
            path = self.image_dir / f"{stamp}.png"
            if path.is_file():
                self.frames.append(TimedImage(stamp, path))
            else:
                missing += 1
        if missing:
            LOG.warning("%d of %d images listed in %s are missing in %s (chunks not downloaded?)",
                        missing, len(stamps), timestamps_path, self.image_dir)
        if not self.frames:
            raise DatasetError(f"no images of {timestamps_path} found in {self.image_dir}")

        self.camera_model = read_camera_model(models_dir, self.camera) if models_dir is not None else None
        self.undistort = bool(undistort and self.camera_model is not None)
        if self.undistort and self.camera_model.lut is None:
            LOG.warning("no distortion look-up table for %s in %s: images stay distorted",
                        self.camera_model.name, models_dir)
            self.undistort = False

        self.G_camera_vehicle = np.eye(4)
        if extrinsics_dir is not None:
            path = Path(extrinsics_dir) / f"{sensor}.txt"
            if path.is_file():
                T = read_extrinsics(path)
                self.G_camera_vehicle = T if extrinsics_camera_from_vehicle else np.linalg.inv(T)
            elif sensor != "stereo":  # the stereo camera defines the vehicle frame
                raise DatasetError(f"extrinsics file not found: {path}")

    def __len__(self) -> int:
        return len(self.frames)

    def load(self, index: int) -> np.ndarray:
        """Image ``index``: demosaiced (and undistorted when enabled) RGB (H, W, 3) uint8."""
        path = self.frames[index].path
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise DatasetError(f"cannot read image {path}")
        if raw.ndim == 3:
            raise DatasetError(f"{path}: expected a single-channel Bayer image, got {raw.shape[2]} channels")
        if raw.dtype != np.uint8:
            raw = (raw >> 8).astype(np.uint8) if raw.dtype == np.uint16 else raw.astype(np.uint8)
        rgb = demosaic(raw, self.pattern)
        return self.camera_model.undistort(rgb) if self.undistort else rgb

    def pinhole_camera(self, width: int, height: int) -> Camera:
        """Pinhole :class:`Camera` of the (undistorted) images of ``width`` x ``height`` pixels."""
        if self.camera_model is None:
            raise DatasetError(f"no camera model for {self.camera}: pass the SDK models folder")
        m = self.camera_model
        return Camera.from_pinhole(m.fx, m.fy, m.cx, m.cy, width, height)

    def optical_pose_in_vehicle(self) -> np.ndarray:
        """(4, 4) pose of the optical (image) frame in the RobotCar vehicle frame (x fwd, y right, z down)."""
        model = self.camera_model
        G_camera_image = model.G_camera_image if model is not None else DEFAULT_G_CAMERA_IMAGE
        return np.linalg.inv(self.G_camera_vehicle) @ G_camera_image

    def optical_pose_in_base(self) -> np.ndarray:
        """(4, 4) pose of the optical frame in a REP-103 base frame (x fwd, y left, z up) at the vehicle origin."""
        T = np.eye(4)
        T[:3, :3] = R_BASE_FLU_FROM_VEHICLE_FRD
        return T @ self.optical_pose_in_vehicle()
