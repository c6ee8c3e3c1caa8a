"""SO(3) / SE(3) exponential and logarithm maps in torch (batched, any device/dtype, differentiable).

Tangent vectors are ``xi = (omega_x, omega_y, omega_z, v_x, v_y, v_z)`` (rotation first). With the
left update ``T <- exp(xi) @ T`` a camera point ``p = R X + t`` moves by ``dp/dxi = [-[p]_x, I]``.
"""

from __future__ import annotations

import torch

__all__ = ["skew", "so3_angle", "so3_exp", "so3_log", "se3_exp", "se3_log"]


def _small_angle_threshold(dtype: torch.dtype) -> float:
    """theta^2 below which Taylor expansions are used (their error is then below machine precision)."""
    return 1e-10 if dtype == torch.float64 else 1e-5


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices ``[..., 3, 3]`` of vectors ``[..., 3]``: ``skew(a) @ b == a x b``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(v.shape[:-1] + (3, 3))


def _vee(W: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`skew` on the antisymmetric part: ``[..., 3, 3] -> [..., 3]``."""
    return 0.5 * torch.stack(
        [W[..., 2, 1] - W[..., 1, 2], W[..., 0, 2] - W[..., 2, 0], W[..., 1, 0] - W[..., 0, 1]], dim=-1
    )


def _coefficients(theta2: torch.Tensor):
    """A = sin(t)/t, B = (1-cos t)/t^2, C = (t - sin t)/t^3 with Taylor expansions near 0."""
    small = theta2 < _small_angle_threshold(theta2.dtype)
    t2 = torch.where(small, torch.ones_like(theta2), theta2)
    t = torch.sqrt(t2)
    A = torch.where(small, 1 - theta2 / 6, torch.sin(t) / t)
    B = torch.where(small, 0.5 - theta2 / 24, 2 * torch.sin(t / 2) ** 2 / t2)  # no cancellation
    C = torch.where(small, 1.0 / 6 - theta2 / 120, (t - torch.sin(t)) / (t2 * t))
    return A, B, C


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Rodrigues: axis-angle ``[..., 3]`` (radians) -> rotation matrices ``[..., 3, 3]``."""
    theta2 = (omega * omega).sum(-1)[..., None, None]
    A, B, _ = _coefficients(theta2)
    W = skew(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return eye + A * W + B * (W @ W)


def se3_exp(xi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Twist ``[..., 6]`` (rotation first) -> ``(R [..., 3, 3], t [..., 3])``."""
    omega, v = xi[..., :3], xi[..., 3:]
    theta2 = (omega * omega).sum(-1)[..., None, None]
    A, B, C = _coefficients(theta2)
    W = skew(omega)
    W2 = W @ W
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device)
    R = eye + A * W + B * W2
    V = eye + B * W + C * W2
    return R, (V @ v[..., None])[..., 0]


def so3_angle(R: torch.Tensor) -> torch.Tensor:
    """Rotation angles ``[...]`` in [0, pi] (radians) of matrices ``[..., 3, 3]``: ``atan2`` of
    the antisymmetric part's norm and the trace, accurate near 0 and near pi, without the
    branch :func:`so3_log` takes for the axis near pi (so no host synchronisation)."""
    trace = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    return torch.atan2(_vee(R).norm(dim=-1), ((trace - 1) / 2).clamp(-1.0, 1.0))


def so3_log(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices ``[..., 3, 3]`` -> axis-angle ``[..., 3]`` with angle in [0, pi].

    Uses ``atan2`` for the angle (accurate near 0) and the symmetric part of R near pi.
    """
    trace = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    cos = ((trace - 1) / 2).clamp(-1.0, 1.0)
    s_axis = _vee(R)  # sin(theta) * axis
    sin = s_axis.norm(dim=-1)
    theta = torch.atan2(sin, cos)
    small = theta * theta < _small_angle_threshold(R.dtype)
    factor = torch.where(small, 1 + theta * theta / 6, theta / torch.where(small, torch.ones_like(sin), sin))
    omega = factor[..., None] * s_axis
    # Near pi, sin -> 0 and the antisymmetric part loses the axis: R_sym = cos I + (1 - cos) a a^T.
    near_pi = cos < -0.9
    if bool(near_pi.any()):
        eye = torch.eye(3, dtype=R.dtype, device=R.device)
        M = (0.5 * (R + R.transpose(-1, -2)) - cos[..., None, None] * eye) / (1 - cos)[..., None, None].clamp_min(1e-12)
        diag = torch.diagonal(M, dim1=-2, dim2=-1)
        k = diag.argmax(-1, keepdim=True)
        col = torch.gather(M, -1, k[..., None].expand(M.shape[:-1] + (1,)))[..., 0]
        axis = col / torch.gather(diag, -1, k).clamp_min(1e-12).sqrt()
        sign = torch.where((axis * s_axis).sum(-1) < 0, -1.0, 1.0).to(R.dtype)
        omega = torch.where(near_pi[..., None], (sign * theta)[..., None] * axis, omega)
    return omega


def se3_log(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``(R [..., 3, 3], t [..., 3])`` -> twist ``[..., 6]`` (rotation first), inverse of :func:`se3_exp`."""
    omega = so3_log(R)
    theta2 = (omega * omega).sum(-1)[..., None, None]
    A, B, _ = _coefficients(theta2)
    small = theta2 < _small_angle_threshold(R.dtype)
    D = torch.where(
        small, 1.0 / 12 + theta2 / 720, (1 - A / (2 * B)) / torch.where(small, torch.ones_like(theta2), theta2)
    )
    W = skew(omega)
    eye = torch.eye(3, dtype=R.dtype, device=R.device)
    V_inv = eye - 0.5 * W + D * (W @ W)
    return torch.cat([omega, (V_inv @ t[..., None])[..., 0]], dim=-1)
