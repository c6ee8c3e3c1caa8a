"""Rotation and quaternion conversions: the only place in the library that converts them.

Quaternions are ``(w, x, y, z)`` in the library and in files (COLMAP / visuallocalization.net);
ROS messages and scipy use ``(x, y, z, w)``. Euler angles are roll-pitch-yaw, extrinsic x-y-z
(``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``), as in ROS and the RobotCar SDK.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

__all__ = [
    "wxyz_to_xyzw",
    "xyzw_to_wxyz",
    "quat_wxyz_to_matrix",
    "matrix_to_quat_wxyz",
    "rotation_angle_deg",
    "euler_rpy_to_matrix",
    "matrix_to_euler_rpy",
    "rotvec_to_matrix",
    "matrix_to_rotvec",
]


def wxyz_to_xyzw(q: np.ndarray) -> np.ndarray:
    """Reorder quaternions ``[..., 4]`` from (w, x, y, z) to (x, y, z, w)."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 1:], q[..., :1]], axis=-1)


def xyzw_to_wxyz(q: np.ndarray) -> np.ndarray:
    """Reorder quaternions ``[..., 4]`` from (x, y, z, w) to (w, x, y, z)."""
    q = np.asarray(q, dtype=np.float64)
    return np.concatenate([q[..., 3:], q[..., :3]], axis=-1)


def quat_wxyz_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternion(s) ``[..., 4]`` (w, x, y, z; normalised here) -> rotation matrices ``[..., 3, 3]``."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape[-1] != 4 or not np.all(np.isfinite(q)):
        raise ValueError(f"expected finite quaternion(s) of shape [..., 4] (w, x, y, z), got {q.shape}")
    flat = wxyz_to_xyzw(q.reshape(-1, 4))
    return Rotation.from_quat(flat).as_matrix().reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat_wxyz(R: np.ndarray) -> np.ndarray:
    """Rotation matrix/matrices ``[..., 3, 3]`` -> unit quaternion(s) ``[..., 4]`` (w, x, y, z), w >= 0."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape[-2:] != (3, 3):
        raise ValueError(f"expected rotation matrix of shape [..., 3, 3], got {R.shape}")
    q = xyzw_to_wxyz(Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat())
    q = np.where(q[:, :1] < 0, -q, q)
    return q.reshape(R.shape[:-2] + (4,))


def rotvec_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Axis-angle vector(s) ``[..., 3]`` (radians) -> rotation matrices ``[..., 3, 3]``."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    return Rotation.from_rotvec(rotvec.reshape(-1, 3)).as_matrix().reshape(rotvec.shape[:-1] + (3, 3))


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``[..., 3, 3]`` -> axis-angle vectors ``[..., 3]`` (radians, angle in [0, pi])."""
    R = np.asarray(R, dtype=np.float64)
    return Rotation.from_matrix(R.reshape(-1, 3, 3)).as_rotvec().reshape(R.shape[:-2] + (3,))


def rotation_angle_deg(R: np.ndarray) -> np.ndarray | float:
    """Angle in degrees of rotation matrix/matrices ``[..., 3, 3]`` (accurate near 0 and 180 deg)."""
    R = np.asarray(R, dtype=np.float64)
    angle = np.degrees(Rotation.from_matrix(R.reshape(-1, 3, 3)).magnitude()).reshape(R.shape[:-2])
    return float(angle) if angle.ndim == 0 else angle


def euler_rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Roll, pitch, yaw (radians; extrinsic x, y, z) -> ``(3, 3)`` ``Rz(yaw) @ Ry(pitch) @ Rx(roll)``."""
    return Rotation.from_euler("xyz", [roll, pitch, yaw]).as_matrix()


def matrix_to_euler_rpy(R: np.ndarray) -> tuple[float, float, float]:
    """``(3, 3)`` rotation -> (roll, pitch, yaw) in radians, inverse of :func:`euler_rpy_to_matrix`."""
    roll, pitch, yaw = Rotation.from_matrix(np.asarray(R, dtype=np.float64)).as_euler("xyz")
    return float(roll), float(pitch), float(yaw)
