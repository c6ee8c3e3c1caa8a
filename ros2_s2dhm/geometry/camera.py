"""COLMAP camera models with OpenCV-convention intrinsics, projection, Jacobians and undistortion.

Supported models and parameter order (as in COLMAP):
``PINHOLE (fx, fy, cx, cy)``, ``SIMPLE_PINHOLE (f, cx, cy)``, ``SIMPLE_RADIAL (f, cx, cy, k)``,
``RADIAL (f, cx, cy, k1, k2)``, ``OPENCV (fx, fy, cx, cy, k1, k2, p1, p2)``.
``Camera.params`` hold the principal point in OpenCV convention (top-left pixel centre = (0, 0));
COLMAP files use (0.5, 0.5): convert with :meth:`Camera.from_colmap` / :meth:`Camera.to_colmap`.
All models are evaluated as OPENCV (``k1, k2, p1, p2``) on normalised coordinates ``(x/z, y/z)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from ..errors import CameraError
from .pixels import scale_pixels

__all__ = ["Camera", "CAMERA_MODELS"]

CAMERA_MODELS: dict[str, tuple[str, ...]] = {
    "SIMPLE_PINHOLE": ("f", "cx", "cy"),
    "PINHOLE": ("fx", "fy", "cx", "cy"),
    "SIMPLE_RADIAL": ("f", "cx", "cy", "k"),
    "RADIAL": ("f", "cx", "cy", "k1", "k2"),
    "OPENCV": ("fx", "fy", "cx", "cy", "k1", "k2", "p1", "p2"),
}
_PRINCIPAL_POINT_INDEX = {"SIMPLE_PINHOLE": 1, "PINHOLE": 2, "SIMPLE_RADIAL": 1, "RADIAL": 1, "OPENCV": 2}


@dataclass(frozen=True, eq=False)
class Camera:
    """A calibrated camera: COLMAP ``model`` name, image ``width``/``height`` and OpenCV-convention ``params``."""

    model: str
    width: int
    height: int
    params: np.ndarray

    def __post_init__(self):
        model = str(self.model).upper()
        if model not in CAMERA_MODELS:
            raise CameraError(f"camera model '{self.model}' is not supported; use one of {sorted(CAMERA_MODELS)}")
        params = np.array(self.params, dtype=np.float64).reshape(-1)
        names = CAMERA_MODELS[model]
        if params.size != len(names):
            raise CameraError(f"camera model {model} expects {len(names)} params {names}, got {params.size}")
        if not np.all(np.isfinite(params)):
            raise CameraError(f"camera params must be finite, got {params.tolist()} for {names}")
        if not (float(self.width) == int(self.width) and float(self.height) == int(self.height)
                and int(self.width) > 0 and int(self.height) > 0):
            raise CameraError(f"camera width/height must be positive integers, got {self.width}x{self.height}")
        focal = params[: _PRINCIPAL_POINT_INDEX[model]]
        if np.any(focal <= 0):
            raise CameraError(f"camera focal length(s) must be > 0, got {focal.tolist()}")
        params.flags.writeable = False
        object.__setattr__(self, "model", model)
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "params", params)

    # --- constructors and conversions ---------------------------------------------------------
    @classmethod
    def from_pinhole(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> "Camera":
        """PINHOLE camera from OpenCV-convention intrinsics."""
        return cls("PINHOLE", width, height, np.array([fx, fy, cx, cy], dtype=np.float64))

    @classmethod
    def from_colmap(cls, model: str, width: int, height: int, params) -> "Camera":
        """From COLMAP params (principal point in COLMAP convention, shifted by -0.5 here)."""
        params = np.array(params, dtype=np.float64).reshape(-1)
        model = str(model).upper()
        if model in _PRINCIPAL_POINT_INDEX and params.size == len(CAMERA_MODELS[model]):
            i = _PRINCIPAL_POINT_INDEX[model]
            params[i: i + 2] -= 0.5
        return cls(model, width, height, params)

    @classmethod
    def from_pycolmap(cls, camera) -> "Camera":
        """From a ``pycolmap.Camera`` (duck-typed: ``model``, ``width``, ``height``, ``params``)."""
        model = getattr(camera.model, "name", camera.model)
        return cls.from_colmap(str(model), camera.width, camera.height, np.asarray(camera.params))

    def to_colmap(self) -> tuple[str, int, int, np.ndarray]:
        """``(model, width, height, params)`` with the principal point in COLMAP convention."""
        params = self.params.copy()
        i = _PRINCIPAL_POINT_INDEX[self.model]
        params[i: i + 2] += 0.5
        return self.model, self.width, self.height, params

    def opencv_params(self) -> np.ndarray:
        """The model as OPENCV parameters (8,): fx, fy, cx, cy, k1, k2, p1, p2."""
        p = self.params
        if self.model == "PINHOLE":
            return np.array([p[0], p[1], p[2], p[3], 0, 0, 0, 0], dtype=np.float64)
        if self.model == "OPENCV":
            return p.copy()
        k1 = p[3] if p.size > 3 else 0.0
        k2 = p[4] if p.size > 4 else 0.0
        return np.array([p[0], p[0], p[1], p[2], k1, k2, 0, 0], dtype=np.float64)

    @property
    def K(self) -> np.ndarray:
        """(3, 3) intrinsic matrix (OpenCV convention)."""
        fx, fy, cx, cy = self.opencv_params()[:4]
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)

    @property
    def dist_coeffs(self) -> np.ndarray:
        """(4,) OpenCV distortion coefficients k1, k2, p1, p2 (zeros for pinhole models)."""
        return self.opencv_params()[4:]

    @cached_property
    def has_distortion(self) -> bool:
        """Any non-zero distortion coefficient (computed once: projections ask every step)."""
        return bool(np.any(self.dist_coeffs != 0))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    def scaled(self, sx: float, sy: float | None = None, width: int | None = None,
               height: int | None = None) -> "Camera":
        """Camera of the image resized by ``sx``, ``sy`` (new / old; ``sy`` defaults to ``sx``).

        The new size defaults to ``round(width * sx)`` x ``round(height * sy)``; pass ``width`` /
        ``height`` when the resized image (or feature map) has another size. Single-focal models
        scaled anisotropically become PINHOLE / OPENCV (distortion is unchanged in normalised coordinates).
        """
        sy = sx if sy is None else sy
        fx, fy, cx, cy = self.opencv_params()[:4]
        f_new = np.array([fx * sx, fy * sy])
        c_new = scale_pixels(np.array([cx, cy]), (sx, sy))
        width = int(round(self.width * sx)) if width is None else int(width)
        height = int(round(self.height * sy)) if height is None else int(height)
        if sx == sy and self.model != "PINHOLE" and self.model != "OPENCV":
            params = self.params.copy()
            params[0] *= sx
            params[1:3] = c_new
            return Camera(self.model, width, height, params)
        if not self.has_distortion and self.model != "OPENCV":
            return Camera("PINHOLE", width, height, np.concatenate([f_new, c_new]))
        return Camera("OPENCV", width, height, np.concatenate([f_new, c_new, self.dist_coeffs]))

    # --- torch geometry -----------------------------------------------------------------------
    def _torch_params(self, like: torch.Tensor) -> torch.Tensor:
        """OpenCV params ``[4 + 4]`` on ``like``'s device and dtype, copied there once per
        (device, dtype): an iterative solver projecting every step makes no host transfer."""
        cache = self.__dict__.setdefault("_params_on", {})
        key = (like.device, like.dtype)
        if key not in cache:
            cache[key] = torch.as_tensor(self.opencv_params(), dtype=like.dtype, device=like.device)
        return cache[key]

    @staticmethod
    def _distort(n: torch.Tensor, k: torch.Tensor, jacobian: bool = False):
        """Distort normalised points ``[..., 2]`` with k = (k1, k2, p1, p2); optionally ``d/dn [..., 2, 2]``."""
        k1, k2, p1, p2 = k.unbind(-1)
        u, v = n.unbind(-1)
        uu, vv, uv = u * u, v * v, u * v
        r2 = uu + vv
        radial = k1 * r2 + k2 * r2 * r2
        du = u * radial + 2 * p1 * uv + p2 * (r2 + 2 * uu)
        dv = v * radial + 2 * p2 * uv + p1 * (r2 + 2 * vv)
        nd = torch.stack([u + du, v + dv], dim=-1)
        if not jacobian:
            return nd
        dradial = 2 * (k1 + 2 * k2 * r2)  # d(radial)/d(r2) * 2
        j00 = 1 + radial + uu * dradial + 2 * p1 * v + 6 * p2 * u
        j01 = uv * dradial + 2 * p1 * u + 2 * p2 * v
        j10 = uv * dradial + 2 * p2 * v + 2 * p1 * u
        j11 = 1 + radial + vv * dradial + 2 * p2 * u + 6 * p1 * v
        J = torch.stack([j00, j01, j10, j11], dim=-1).reshape(n.shape[:-1] + (2, 2))
        return nd, J

    def max_radius2(self) -> float:
        """Largest squared normalised radius where radial distortion is monotonic (inf if everywhere).

        Beyond it, far-away points fold back into the image; :meth:`project` marks them invalid.
        """
        k1, k2 = self.dist_coeffs[:2]
        # d/dr [r (1 + k1 r^2 + k2 r^4)] = 1 + 3 k1 s + 5 k2 s^2 with s = r^2.
        roots = np.roots([5 * k2, 3 * k1, 1.0]) if (k1 != 0 or k2 != 0) else np.array([])
        roots = roots[np.isreal(roots)].real
        roots = roots[roots > 0]
        return float(roots.min()) if roots.size else float("inf")

    def in_image(self, uv: torch.Tensor) -> torch.Tensor:
        """Mask ``[...]`` of pixels ``[..., 2]`` inside ``[-0.5, W-0.5] x [-0.5, H-0.5]``."""
        return ((uv[..., 0] >= -0.5) & (uv[..., 0] <= self.width - 0.5)
                & (uv[..., 1] >= -0.5) & (uv[..., 1] <= self.height - 0.5))

    def project(self, p_cam: torch.Tensor, check_bounds: bool = True, eps: float = 1e-6):
        """Camera points ``[..., 3]`` -> ``(uv [..., 2], valid [...] bool)``.

        ``valid``: depth ``z > eps``, inside the monotonic range of the distortion
        (:meth:`max_radius2`) and, when ``check_bounds``, the pixel lies inside the image.
        """
        params = self._torch_params(p_cam)
        n = p_cam[..., :2] / p_cam[..., 2].clamp_min(eps)[..., None]
        valid = self._projectable(p_cam, n, eps)
        if self.has_distortion:
            n = self._distort(n, params[4:])
        uv = n * params[:2] + params[2:4]
        if check_bounds:
            valid = valid & self.in_image(uv)
        return uv, valid

    def _projectable(self, p_cam: torch.Tensor, n: torch.Tensor, eps: float) -> torch.Tensor:
        """Depth ``z > eps`` and, with distortion, normalised point ``n`` inside its monotonic
        range: the ``valid`` of :meth:`project` without the image bounds."""
        valid = p_cam[..., 2] > eps
        if self.has_distortion:
            valid = valid & ((n * n).sum(-1) < self.max_radius2())
        return valid

    def project_jacobian(self, p_cam: torch.Tensor, eps: float = 1e-6):
        """Camera points ``[..., 3]`` -> ``(uv [..., 2], J [..., 2, 3], valid [...])`` with
        ``J = d uv / d p_cam``.

        Analytic, distortion included. Points with ``z <= eps`` use ``z = eps``; ``valid`` is
        :meth:`project`'s without the image bounds (depth, distortion range).
        """
        params = self._torch_params(p_cam)
        x, y = p_cam[..., 0], p_cam[..., 1]
        z = p_cam[..., 2].clamp_min(eps)
        inv_z = 1.0 / z
        n = torch.stack([x * inv_z, y * inv_z], dim=-1)
        zero = torch.zeros_like(z)
        J_n = torch.stack([inv_z, zero, -x * inv_z * inv_z, zero, inv_z, -y * inv_z * inv_z], dim=-1)
        J_n = J_n.reshape(p_cam.shape[:-1] + (2, 3))
        valid = self._projectable(p_cam, n, eps)
        if self.has_distortion:
            n, J_d = self._distort(n, params[4:], jacobian=True)
            J_n = J_d @ J_n
        uv = n * params[:2] + params[2:4]
        return uv, params[:2, None] * J_n, valid

    def undistort_normalized(self, nd: torch.Tensor, iterations: int = 20, tol: float = 1e-12) -> torch.Tensor:
        """Distorted normalised coordinates ``[..., 2]`` -> undistorted, by Newton iterations."""
        if not self.has_distortion:
            return nd
        k = self._torch_params(nd)[4:]
        n = nd.clone()
        for _ in range(iterations):
            d, J = self._distort(n, k, jacobian=True)
            res = d - nd
            det = J[..., 0, 0] * J[..., 1, 1] - J[..., 0, 1] * J[..., 1, 0]
            det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
            step_u = (J[..., 1, 1] * res[..., 0] - J[..., 0, 1] * res[..., 1]) / det
            step_v = (-J[..., 1, 0] * res[..., 0] + J[..., 0, 0] * res[..., 1]) / det
            n = n - torch.stack([step_u, step_v], dim=-1)
            if res.numel() == 0 or float(res.abs().max()) < tol:
                break
        return n

    def unproject(self, uv: torch.Tensor) -> torch.Tensor:
        """Pixels ``[..., 2]`` -> undistorted camera rays ``[..., 3]`` with ``z = 1``."""
        params = self._torch_params(uv)
        n = self.undistort_normalized((uv - params[2:4]) / params[:2])
        return torch.cat([n, torch.ones_like(n[..., :1])], dim=-1)

    # --- numpy conveniences -------------------------------------------------------------------
    def project_np(self, points: np.ndarray, check_bounds: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Camera points (N, 3) -> (uv (N, 2) float64, valid (N,) bool)."""
        uv, valid = self.project(torch.as_tensor(np.asarray(points, dtype=np.float64)), check_bounds)
        return uv.numpy(), valid.numpy()

    def unproject_np(self, uv: np.ndarray) -> np.ndarray:
        """Pixels (N, 2) -> rays (N, 3) float64 with z = 1."""
        return self.unproject(torch.as_tensor(np.asarray(uv, dtype=np.float64))).numpy()

    def __eq__(self, other) -> bool:
        return (isinstance(other, Camera) and self.model == other.model and self.width == other.width
                and self.height == other.height and np.array_equal(self.params, other.params))

    __hash__ = None

    def __repr__(self) -> str:
        return f"Camera({self.model}, {self.width}x{self.height}, params={self.params.tolist()})"
