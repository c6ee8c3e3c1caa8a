"""RANSAC-PnP through a library: OpenCV (default), pycolmap or poselib.

All backends take 2D points in the OpenCV pixel convention and a :class:`Camera`
whose parameters are in that same convention, so no half-pixel shift is needed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .geometry import Camera, Pose
from .options import option

BACKENDS = ("opencv", "pycolmap", "poselib")


@dataclass
class PnPConfig:
    """RANSAC-PnP settings (S2DHM: P3P, 12 px, 5000 iterations, >= 12 inliers). Default backend
    poselib: its LO-RANSAC is 4-5x faster than OpenCV at the low inlier ratios of wrong references."""

    backend: str = option("poselib", "RANSAC-PnP implementation", choices=BACKENDS)
    reprojection_error_px: float = option(
        12.0, "RANSAC-PnP inlier threshold in pixels of the input image (12: S2DHM's value for "
              "1024 px images)", name="pnp_threshold_px", low=0.1)
    iterations: int = option(5000, "RANSAC iterations at most", low=1)
    min_iterations: int = option(50, "RANSAC iterations at least (poselib, pycolmap stop early "
                                     "when the inlier ratio is high)", low=0)
    confidence: float = option(0.9999, "RANSAC success probability that stops the sampling",
                               low=0.5, high=1.0)
    min_inliers: int = option(12, "fewer inliers: the reference gives no pose", low=4)
    refine: bool = option(True, "non-linear refinement of the RANSAC pose on its inliers")

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"PnPConfig.backend must be one of {BACKENDS}, got {self.backend!r}")


@dataclass
class PnPResult:
    """Outcome of RANSAC-PnP.

    inliers: bool [N] over the input correspondences.
    """

    success: bool
    pose: Pose | None
    inliers: np.ndarray
    reason: str | None = None
    num_inliers: int = field(init=False)

    def __post_init__(self):
        self.num_inliers = int(np.count_nonzero(self.inliers))


def _failure(n: int, reason: str) -> PnPResult:
    return PnPResult(False, None, np.zeros(n, bool), reason)


def _opencv(p2d, p3d, camera: Camera, cfg: PnPConfig):
    ok, rvec, tvec, idx = cv2.solvePnPRansac(
        p3d, p2d, camera.K, camera.dist_coeffs,
        iterationsCount=cfg.iterations, reprojectionError=cfg.reprojection_error_px,
        confidence=cfg.confidence, flags=cv2.SOLVEPNP_P3P)
    if not ok or idx is None:
        return None, None
    inliers = np.zeros(len(p2d), bool)
    inliers[idx.ravel()] = True
    if cfg.refine and inliers.sum() >= 4:
        rvec, tvec = cv2.solvePnPRefineLM(
            p3d[inliers], p2d[inliers], camera.K, camera.dist_coeffs, rvec, tvec)
    R, _ = cv2.Rodrigues(rvec)
    return Pose(R, tvec.ravel()), inliers


def _pycolmap(p2d, p3d, camera: Camera, cfg: PnPConfig):
    import pycolmap

    cam = pycolmap.Camera(model=camera.model, width=camera.width, height=camera.height,
                          params=np.asarray(camera.params, np.float64))
    est = pycolmap.AbsolutePoseEstimationOptions()
    est.ransac.max_error = cfg.reprojection_error_px
    est.ransac.max_num_trials = cfg.iterations
    est.ransac.min_num_trials = min(cfg.min_iterations, cfg.iterations)
    est.ransac.confidence = cfg.confidence
    est.ransac.random_seed = 0
    ref = pycolmap.AbsolutePoseRefinementOptions()
    if not cfg.refine:
        ref.max_num_iterations = 0
    out = pycolmap.estimate_and_refine_absolute_pose(p2d, p3d, cam, est, ref)
    if out is None:
        return None, None
    rig = out["cam_from_world"]
    return Pose(rig.rotation.matrix(), np.asarray(rig.translation)), np.asarray(out["inlier_mask"], bool)


def _poselib(p2d, p3d, camera: Camera, cfg: PnPConfig):
    import poselib

    cam = {"model": camera.model, "width": camera.width, "height": camera.height,
           "params": list(map(float, camera.params))}
    ransac = {"max_reproj_error": cfg.reprojection_error_px, "max_iterations": cfg.iterations,
              "min_iterations": min(cfg.min_iterations, cfg.iterations),
              "success_prob": cfg.confidence, "seed": 0}
    bundle = {} if cfg.refine else {"max_iterations": 0}
    pose, info = poselib.estimate_absolute_pose(p2d, p3d, cam, ransac, bundle)
    inliers = np.asarray(info.get("inliers", []), bool)
    if inliers.size != len(p2d):
        return None, None
    return Pose(np.asarray(pose.R), np.asarray(pose.t)), inliers


_SOLVERS = {"opencv": _opencv, "pycolmap": _pycolmap, "poselib": _poselib}


def ransac_pnp(points2d: np.ndarray, points3d: np.ndarray, camera: Camera,
               config: PnPConfig = PnPConfig()) -> PnPResult:
    """Estimate the world-to-camera pose from 2D-3D matches.

    points2d: [N,2] query pixels (OpenCV convention), points3d: [N,3] world points.
    Fails (never raises) with a reason when there are too few matches or inliers.
    """
    p2d = np.ascontiguousarray(points2d, np.float64).reshape(-1, 2)
    p3d = np.ascontiguousarray(points3d, np.float64).reshape(-1, 3)
    n = len(p2d)
    if len(p3d) != n:
        raise ValueError(f"ransac_pnp: {n} 2D points but {len(p3d)} 3D points")
    needed = max(4, config.min_inliers)
    if n < needed:
        return _failure(n, f"too few matches for PnP ({n} < {needed})")
    try:
        pose, inliers = _SOLVERS[config.backend](p2d, p3d, camera, config)
    except ValueError as exc:  # Pose refuses a non-finite or malformed solver output
        return _failure(n, f"{config.backend} RANSAC-PnP returned an unusable pose ({exc})")
    if pose is None:
        return _failure(n, f"{config.backend} RANSAC-PnP found no pose")
    if inliers.sum() < config.min_inliers:
        return PnPResult(False, None, inliers,
                         f"too few PnP inliers ({int(inliers.sum())} < {config.min_inliers})")
    return PnPResult(True, pose, inliers)
