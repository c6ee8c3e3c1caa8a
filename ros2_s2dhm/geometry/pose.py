"""Rigid world-to-camera poses ``x_cam = R @ x_world + t`` and pose errors."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .lie import se3_exp, se3_log, so3_angle
from .rotation import matrix_to_quat_wxyz, quat_wxyz_to_matrix, rotation_angle_deg

__all__ = ["Pose", "TorchPose", "pose_error"]


@dataclass(frozen=True, eq=False)
class Pose:
    """World-to-camera rigid transform: ``R (3, 3)`` and ``t (3,)``, float64 numpy.

    ``a @ b`` composes (apply ``b`` first); ``Pose.exp(xi)`` / ``.log()`` use the twist
    ``xi = (omega, v)`` (rotation first) and the left update is ``Pose.exp(xi) @ T``.
    """

    R: np.ndarray
    t: np.ndarray

    def __post_init__(self):
        R = np.array(self.R, dtype=np.float64).reshape(3, 3) if np.size(self.R) == 9 else None
        t = np.array(self.t, dtype=np.float64).reshape(3) if np.size(self.t) == 3 else None
        if R is None or t is None:
            raise ValueError(f"Pose expects R of shape (3, 3) and t of shape (3,), got "
                             f"{np.shape(self.R)} and {np.shape(self.t)}")
        if not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
            raise ValueError("Pose has non-finite rotation or translation")
        R.flags.writeable = False
        t.flags.writeable = False
        object.__setattr__(self, "R", R)
        object.__setattr__(self, "t", t)

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def identity(cls) -> "Pose":
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_quaternion(cls, q_wxyz, t) -> "Pose":
        """From a (w, x, y, z) quaternion (normalised here) and translation (3,)."""
        return cls(quat_wxyz_to_matrix(q_wxyz), t)

    @classmethod
    def from_matrix(cls, T) -> "Pose":
        """From a (4, 4) (or (3, 4)) homogeneous matrix."""
        T = np.asarray(T, dtype=np.float64)
        if T.shape not in ((4, 4), (3, 4)):
            raise ValueError(f"Pose.from_matrix expects a (4, 4) or (3, 4) matrix, got {T.shape}")
        return cls(T[:3, :3], T[:3, 3])

    @classmethod
    def from_center(cls, R, center) -> "Pose":
        """From world-to-camera rotation R (3, 3) and camera centre in world coordinates (3,)."""
        R = np.asarray(R, dtype=np.float64)
        return cls(R, -R @ np.asarray(center, dtype=np.float64))

    @classmethod
    def exp(cls, xi) -> "Pose":
        """SE(3) exponential of a twist (6,) (rotation first)."""
        R, t = se3_exp(torch.as_tensor(np.asarray(xi, dtype=np.float64).reshape(6)))
        return cls(R.numpy(), t.numpy())

    # --- accessors ----------------------------------------------------------------------------
    def log(self) -> np.ndarray:
        """SE(3) logarithm: twist (6,) (rotation first), inverse of :meth:`exp`."""
        return se3_log(torch.from_numpy(self.R.copy()), torch.from_numpy(self.t.copy())).numpy()

    def quaternion_wxyz(self) -> np.ndarray:
        """Rotation as a unit quaternion (4,) (w, x, y, z), w >= 0."""
        return matrix_to_quat_wxyz(self.R)

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix."""
        T = np.eye(4)
        T[:3, :3] = self.R
        T[:3, 3] = self.t
        return T

    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates (3,) = -R^T t."""
        return -self.R.T @ self.t

    def inverse(self) -> "Pose":
        return Pose(self.R.T, -self.R.T @ self.t)

    def __matmul__(self, other: "Pose") -> "Pose":
        if not isinstance(other, Pose):
            return NotImplemented
        return Pose(self.R @ other.R, self.R @ other.t + self.t)

    def transform(self, points: np.ndarray) -> np.ndarray:
        """Apply to points (N, 3) (or (3,)) -> same shape."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self.R.T + self.t

    def to_torch(self, dtype=torch.float64, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``(R [3, 3], t [3])`` as torch tensors."""
        return (torch.tensor(self.R, dtype=dtype, device=device),
                torch.tensor(self.t, dtype=dtype, device=device))

    def __eq__(self, other) -> bool:
        return isinstance(other, Pose) and np.array_equal(self.R, other.R) and np.array_equal(self.t, other.t)

    __hash__ = None

    def __repr__(self) -> str:
        q = np.array2string(self.quaternion_wxyz(), precision=6)
        t = np.array2string(self.t, precision=4)
        return f"Pose(q_wxyz={q}, t={t})"


def pose_error(estimate: Pose, truth: Pose) -> tuple[float, float]:
    """Localization error (visuallocalization.net): camera-centre distance (m), angle of R_est R_gt^T (deg)."""
    dt = float(np.linalg.norm(estimate.center - truth.center))
    dr = float(rotation_angle_deg(estimate.R @ truth.R.T))
    return dt, dr


@dataclass(frozen=True, eq=False)
class TorchPose:
    """World-to-camera poses as torch tensors on one device: ``R [..., 3, 3]``, ``t [..., 3]``.

    The batched, device-resident face of :class:`Pose` for the stages that iterate on a pose
    (Feature-PnP's Levenberg-Marquardt steps): composing, the exponential map and the step
    size stay on the tensors' device; :meth:`to_pose` is the one copy back to the host.
    ``a @ b`` composes (apply ``b`` first), broadcasting over the leading dimensions.
    """

    R: torch.Tensor
    t: torch.Tensor

    def __post_init__(self):
        if self.R.shape[-2:] != (3, 3) or self.t.shape[-1:] != (3,) or self.R.shape[:-2] != self.t.shape[:-1]:
            raise ValueError(f"TorchPose expects R [..., 3, 3] and t [..., 3] with the same leading "
                             f"dimensions, got {tuple(self.R.shape)} and {tuple(self.t.shape)}")

    @classmethod
    def from_pose(cls, pose: Pose, dtype=torch.float64, device="cpu") -> "TorchPose":
        """One :class:`Pose` as an unbatched TorchPose (``R [3, 3]``, ``t [3]``)."""
        return cls(*pose.to_torch(dtype, device))

    @classmethod
    def exp(cls, xi: torch.Tensor) -> "TorchPose":
        """SE(3) exponential of twists ``[..., 6]`` (rotation first), on their device."""
        return cls(*se3_exp(xi))

    @property
    def shape(self) -> torch.Size:
        """The leading (batch) dimensions."""
        return self.t.shape[:-1]

    @property
    def center(self) -> torch.Tensor:
        """Camera centres in world coordinates ``[..., 3]`` = ``-R^T t``."""
        return -(self.R.transpose(-1, -2) @ self.t[..., None])[..., 0]

    def __matmul__(self, other: "TorchPose") -> "TorchPose":
        if not isinstance(other, TorchPose):
            return NotImplemented
        return TorchPose(self.R @ other.R, (self.R @ other.t[..., None])[..., 0] + self.t)

    def transform(self, points: torch.Tensor) -> torch.Tensor:
        """Apply to points ``[..., N, 3]`` (leading dimensions broadcast with the pose's)."""
        return points @ self.R.transpose(-1, -2) + self.t[..., None, :]

    def error_to(self, truth: "TorchPose") -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`pose_error` on the device: camera-centre distance ``[...]`` and the angle
        ``[...]`` (degrees) of ``R R_truth^T``."""
        dt = (self.center - truth.center).norm(dim=-1)
        dr = torch.rad2deg(so3_angle(self.R @ truth.R.transpose(-1, -2)))
        return dt, dr

    def to_pose(self) -> Pose:
        """The unbatched pose as a host :class:`Pose` (float64 numpy)."""
        if self.shape:
            raise ValueError(f"TorchPose.to_pose needs an unbatched pose, got batch shape {tuple(self.shape)}")
        return Pose(self.R.detach().cpu().double().numpy(), self.t.detach().cpu().double().numpy())
