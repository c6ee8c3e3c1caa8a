"""Feature-metric PnP: refine a camera pose by aligning dense query features with reference features.

Minimises ``sum_i rho(||F_q(pi(T X_i)) - F_r,i||^2)`` over the PnP inliers ``X_i`` with
Levenberg-Marquardt on SE(3) (left update ``T <- exp(xi) @ T``, ``xi`` rotation first),
iteratively reweighted robust losses and analytic Jacobians: feature-map gradients (central
differences or Sobel) are bilinearly interpolated with the features at the projections, and the
projection Jacobian (distortion included) comes from :meth:`Camera.project_jacobian`.
Everything runs vectorised on the device of the query feature map.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .errors import CameraError
from .feature_sampling import GRADIENTS, FeatureSampler
from .geometry import Camera, Pose, TorchPose
from .geometry.lie import skew
from .options import check_config, option

__all__ = [
    "RefineConfig",
    "RefineResult",
    "FeatureMetricPnP",
    "LOSSES",
    "robust_loss",
]

LOSSES = ("squared", "huber", "cauchy", "geman_mcclure")


@dataclass
class RefineConfig:
    """Levenberg-Marquardt and robust-loss settings (``loss_scale`` is in feature-distance units)."""

    loss: str = option("cauchy", "robust loss of Feature-metric PnP", choices=LOSSES)
    loss_scale: float = option(0.1, "robust loss scale in feature-distance units", low=1e-9)
    loss_scale_from_residuals: float = option(
        0.0, "when > 0: the loss scale is this times the median residual norm at the initial "
             "pose (loss_scale is then unused)", low=0.0)
    max_iterations: int = option(50, "Levenberg-Marquardt iterations at most", low=0)
    lambda_init: float = option(1e-2, "initial Levenberg-Marquardt damping", low=1e-12)
    lambda_factor: float = option(10.0, "damping multiplier after a rejected step", low=1.000001)
    lambda_min: float = option(1e-6, "smallest damping", low=1e-12)
    lambda_max: float = option(1e4, "largest damping", low=1e-12)
    gradient: str = option("central", "image gradient of the feature maps", choices=GRADIENTS)
    rtol_cost: float = option(1e-6, "stop when the cost falls by less than this fraction",
                              low=0.0)
    tol_rotation_deg: float = option(1e-4, "stop when a step rotates less than this", low=0.0)
    tol_translation_m: float = option(1e-5, "stop when a step moves less than this (map units)",
                                      low=0.0)
    min_points: int = option(6, "fewer valid points: no refinement", low=1)

    def validate(self) -> "RefineConfig":
        """Rules between fields (each field's bounds are its option's: options.check_config)."""
        if not self.lambda_min <= self.lambda_init <= self.lambda_max:
            raise ValueError("RefineConfig needs lambda_min <= lambda_init <= lambda_max, got "
                             f"{self.lambda_min}, {self.lambda_init}, {self.lambda_max}")
        return self


@dataclass
class RefineResult:
    """Outcome of :meth:`FeatureMetricPnP.refine`.

    ``covariance`` (6, 6) is over the twist ``xi`` (rotation rad, translation m) of the left
    perturbation of the world-to-camera pose: ``sigma^2 (J^T W J)^-1`` at the final pose with
    ``sigma^2 = cost / (num_points * C - 6)``; infinite diagonal when the pose was not refined.
    """

    pose: Pose
    initial_cost: float
    final_cost: float
    cost_history: list[float]
    iterations: int
    reason: str
    covariance: np.ndarray
    num_points: int
    num_accepted: int = 0
    lambda_final: float = field(default=float("nan"))


def robust_loss(name: str, e: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Robust cost ``rho(e)`` and IRLS weight ``rho'(e)`` of squared residual norms ``e [...]``.

    ``scale`` is the residual norm where the loss departs from ``e`` (``rho(e) ~ e`` for small e).
    """
    s2 = scale * scale
    if name == "squared":
        return e, torch.ones_like(e)
    if name == "huber":
        inlier = e <= s2
        root = e.clamp_min(s2).sqrt()
        return torch.where(inlier, e, 2 * scale * root - s2), torch.where(inlier, torch.ones_like(e), scale / root)
    if name == "cauchy":
        return s2 * torch.log1p(e / s2), 1.0 / (1.0 + e / s2)
    if name == "geman_mcclure":
        return s2 * e / (s2 + e), (s2 / (s2 + e)) ** 2
    raise ValueError(f"unknown robust loss '{name}', expected one of {LOSSES}")


class FeatureMetricPnP:
    """Levenberg-Marquardt refinement of a world-to-camera pose on a dense query feature map."""

    def __init__(self, config: RefineConfig | None = None):
        self.config = config if config is not None else RefineConfig()
        check_config(self.config)

    def refine(self, pose: Pose, points3d: torch.Tensor, ref_features: torch.Tensor,
               query_features: torch.Tensor, camera: Camera,
               weights: torch.Tensor | None = None) -> RefineResult:
        """Refine ``pose`` (world-to-camera).

        Args:
            pose: initial pose (e.g. RANSAC-PnP).
            points3d: ``[N, 3]`` world points (PnP inliers).
            ref_features: ``[N, C]`` reference features of the points.
            query_features: ``[C, H, W]`` dense query feature map; sets the device.
            camera: query camera at the feature-map resolution (``camera.scaled(...)``).
            weights: optional ``[N]`` non-negative per-point weights (cost ``sum w_i rho_i``).
        """
        cfg = self.config
        problem = self.problem(pose, points3d, ref_features, query_features, camera, weights)
        evaluate, C = problem.linearize, problem.channels
        pose = TorchPose.from_pose(pose, problem.points.dtype, problem.points.device)
        cost, cost_valid, n_valid, H, g, penalty = evaluate(pose, None)
        cost, n_valid = float(cost), int(n_valid)
        history = [cost]
        lam = cfg.lambda_init
        if n_valid < cfg.min_points:
            return RefineResult(pose.to_pose(), cost, cost, history, 0, "too_few_points", _no_information(),
                                n_valid, 0, lam)
        reason, iterations, accepted = "max_iterations", 0, 0
        for iterations in range(1, cfg.max_iterations + 1):
            # the pose and the step stay on the device; one read of 5 scalars decides the step
            diag = torch.diagonal(H)
            damping = torch.diag(lam * diag.clamp_min(1e-9 * diag.max().clamp_min(1e-30)))
            delta, info = torch.linalg.solve_ex(H + damping, -g)
            solved = (info == 0) & torch.isfinite(delta).all()
            candidate = TorchPose.exp(torch.where(solved, delta, torch.zeros_like(delta)).to(pose.t.dtype)) @ pose
            new = problem.cost(candidate, penalty)  # linearised only once accepted
            ok, new_cost, new_valid, step_t, step_r = torch.stack(
                [solved.to(new[0].dtype), new[0], new[2].to(new[0].dtype), *candidate.error_to(pose)]).tolist()
            if not ok:
                reason = "lambda_max"
                break
            small_step = step_r < cfg.tol_rotation_deg and step_t < cfg.tol_translation_m
            if new_cost < cost and new_valid >= cfg.min_points:
                relative = (cost - new_cost) / max(cost, 1e-30)
                pose, (_, cost_valid, _, H, g, _) = candidate, evaluate(candidate, penalty)
                cost, n_valid = new_cost, int(new_valid)
                history.append(cost)
                accepted += 1
                lam = max(lam / cfg.lambda_factor, cfg.lambda_min)
                if relative < cfg.rtol_cost:
                    reason = "converged_cost"
                    break
                if small_step:
                    reason = "converged_step"
                    break
            else:
                if small_step:  # even the Gauss-Newton-like step is negligible: at the minimum
                    reason = "converged_step"
                    break
                lam *= cfg.lambda_factor
                if lam > cfg.lambda_max:
                    reason = "lambda_max"
                    break
        covariance = _covariance(H, float(cost_valid), n_valid * C - 6)
        return RefineResult(pose.to_pose(), history[0], cost, history, iterations, reason, covariance, n_valid,
                            accepted, lam)

    def problem(self, pose: Pose, points3d: torch.Tensor, ref_features: torch.Tensor,
                query_features: torch.Tensor, camera: Camera,
                weights: torch.Tensor | None = None) -> "_Problem":
        """The least-squares problem of :meth:`refine` (arguments as there), with its loss
        scale set (from the residuals at ``pose`` when ``loss_scale_from_residuals`` > 0)."""
        fmap, points, ref = self._check_inputs(points3d, ref_features, query_features, camera)
        device = fmap.device
        dtype = torch.float32 if device.type == "mps" else torch.float64
        points = points.to(device=device, dtype=dtype)
        if weights is not None:
            weights = weights.detach().to(device=device, dtype=dtype)
            if weights.shape != (points.shape[0],) or not bool((weights >= 0).all()):
                raise ValueError(f"weights must be [N] = [{points.shape[0]}] and >= 0, "
                                 f"got shape {tuple(weights.shape)}")
        problem = _Problem(self.config, FeatureSampler(fmap, self.config.gradient), camera,
                           points, ref.to(device=device, dtype=fmap.dtype), weights,
                           self.config.loss_scale)
        if self.config.loss_scale_from_residuals > 0:
            problem.scale = problem.residual_scale(pose, self.config.loss_scale_from_residuals)
        return problem

    @staticmethod
    def _check_inputs(points3d, ref_features, query_features, camera: Camera):
        if query_features.ndim != 3 or min(query_features.shape[1:]) < 2:
            raise ValueError(f"query_features must be [C, H, W] with H, W >= 2, got {tuple(query_features.shape)}")
        C, H, W = query_features.shape
        if points3d.ndim != 2 or points3d.shape[1] != 3:
            raise ValueError(f"points3d must be [N, 3], got {tuple(points3d.shape)}")
        if ref_features.shape != (points3d.shape[0], C):
            raise ValueError(f"ref_features must be [N, C] = [{points3d.shape[0]}, {C}], "
                             f"got {tuple(ref_features.shape)}")
        if abs(camera.width - W) > 1 or abs(camera.height - H) > 1:
            raise CameraError(f"camera is {camera.width}x{camera.height} but the feature map is {W}x{H}; pass the "
                              "camera scaled to the feature map (Camera.scaled with pixels.image_to_feature)")
        fmap = query_features if query_features.is_floating_point() and query_features.dtype in (
            torch.float32, torch.float64) else query_features.float()
        return fmap.detach(), points3d.detach(), ref_features.detach()


class _Problem:
    """``sum_i w_i rho(||F_q(pi(T X_i)) - F_r,i||^2)`` on one sampler: cost and its
    Gauss-Newton linearisation at a pose (points [N, 3], ref [N, C], weights [N] or None
    for all ones)."""

    def __init__(self, config: RefineConfig, sampler: FeatureSampler, camera: Camera,
                 points: torch.Tensor, ref: torch.Tensor, weights: torch.Tensor | None,
                 scale: float):
        self.config, self.sampler, self.camera = config, sampler, camera
        self.points, self.ref, self.weights, self.scale = points, ref, weights, scale
        self.channels = sampler.C
        self.eye3 = torch.eye(3, dtype=points.dtype, device=points.device)
        self._projected = (None,)  # (pose, its _project result): the last pose projected

    def _pose(self, pose: Pose | TorchPose) -> TorchPose:
        return pose if isinstance(pose, TorchPose) else TorchPose.from_pose(
            pose, self.points.dtype, self.points.device)

    def _project(self, pose: Pose | TorchPose):
        """Camera points [N, 3], pixels uv [N, 2], d uv / d p_cam [N, 2, 3] and projectable [N]
        (depth, distortion range) at ``pose``; the last pose's are kept, so linearising the
        step :meth:`cost` just accepted does not project the points again."""
        if self._projected[0] is not pose:
            p_cam = self._pose(pose).transform(self.points)
            self._projected = (pose, p_cam, *self.camera.project_jacobian(p_cam))
        return self._projected[1:]

    def _residuals(self, pose: Pose | TorchPose):
        """Camera points [N, 3], d uv / d p_cam [N, 2, 3], residuals [N, C], feature
        gradients [N, C, 2] and valid [N] (inside the map, depth, distortion range), from one
        projection at an unbatched pose (a host :class:`Pose` is copied to the device)."""
        p_cam, uv, J_proj, projectable = self._project(pose)
        values, grad, valid = self.sampler(uv)
        valid = valid & projectable  # depth, distortion range
        return p_cam, J_proj, values - self.ref, grad, valid

    def residual_scale(self, pose: Pose | TorchPose, factor: float) -> float:
        """``factor`` x the median residual norm of the valid points (the fixed scale when
        none is valid)."""
        _, _, r, _, valid = self._residuals(pose)
        if not bool(valid.any()):
            return self.scale
        return max(float(r.norm(dim=-1)[valid].median()) * factor, 1e-9)

    def _robust_cost(self, r: torch.Tensor, valid: torch.Tensor, penalty: torch.Tensor | None):
        """Cost, valid-point cost, #valid, IRLS weights [N] (0 where invalid) and the penalty
        of a point that leaves the map, from residuals ``r [N, C]`` and ``valid [N]``."""
        e = (r * r).sum(-1).to(self.points.dtype)
        rho, w = robust_loss(self.config.loss, e, self.scale)
        if self.weights is not None:
            rho, w = self.weights * rho, self.weights * w
        zero = torch.zeros_like(rho)
        n_valid = valid.sum()
        valid_rho = torch.where(valid, rho, zero)
        cost_valid = valid_rho.sum()
        if penalty is None:  # the largest valid cost (0 when none is valid: rho >= 0)
            penalty = valid_rho.max() if len(valid_rho) else cost_valid
        cost = cost_valid + (self.points.shape[0] - n_valid) * penalty
        return cost, cost_valid, n_valid, torch.where(valid, w, zero), penalty

    def cost(self, pose: Pose | TorchPose, penalty: torch.Tensor):
        """Cost, valid-point cost and #valid (0-d tensors) at ``pose`` without linearising:
        features at the projections only, no gradients (what a step that may be rejected needs)."""
        _, uv, _, projectable = self._project(pose)
        values, valid = self.sampler.values(uv)
        return self._robust_cost(values - self.ref, valid & projectable, penalty)[:3]

    def linearize(self, pose: Pose | TorchPose, penalty: torch.Tensor | None):
        """Cost, valid-point cost, #valid (0-d tensors on the device), Hessian J^T W J [6, 6],
        gradient J^T W r [6] (half the derivative of the cost along the left twist) and the
        penalty of a point that leaves the map (0-d; set by the first call: pass None)."""
        dtype = self.points.dtype
        p_cam, J_proj, r, grad, valid = self._residuals(pose)
        cost, cost_valid, n_valid, w, penalty = self._robust_cost(r, valid, penalty)
        A = torch.einsum("nci,ncj->nij", grad, grad).to(dtype)  # [N, 2, 2]
        b = torch.einsum("nci,nc->ni", grad, r).to(dtype)  # [N, 2]
        J_pose = torch.cat([-skew(p_cam), self.eye3.expand(len(p_cam), 3, 3)], dim=-1)
        J = J_proj @ J_pose  # [N, 2, 6]: d uv / d xi
        H = torch.einsum("n,nki,nkl,nlj->ij", w, J, A, J)
        g = torch.einsum("n,nki,nk->i", w, J, b)
        return cost, cost_valid, n_valid, H, g, penalty


def _no_information() -> np.ndarray:
    return np.diag(np.full(6, np.inf))


def _covariance(H: torch.Tensor, cost: float, dof: int) -> np.ndarray:
    """``sigma^2 H^-1`` with ``sigma^2 = cost / dof``; infinite diagonal if H is not positive definite."""
    H = H.detach().cpu().to(torch.float64)
    H = 0.5 * (H + H.T)
    chol, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0 or dof <= 0:
        return _no_information()
    sigma2 = max(cost, 0.0) / dof
    if sigma2 == 0.0 or not math.isfinite(sigma2):
        sigma2 = float(np.finfo(np.float64).eps)
    cov = torch.cholesky_inverse(chol).numpy() * sigma2
    return 0.5 * (cov + cov.T)
