"""Verification of pose hypotheses and the confidence of a pose.

Every retrieved reference is a hypothesis: its own matches, its own RANSAC-PnP. A hypothesis
is rejected when its pose is implausible for the reference that supplied the points (farther
than ``max_reference_distance_m`` from it, or looking more than ``max_view_angle_deg`` away
from its viewing direction), or when its inliers collapse onto a few query pixels. The rest
get a score in [0, 1] from their evidence:

    inliers      s_n = 1 - exp(-(n - n_min) / inlier_scale)        (0 at the PnP minimum)
    spread       s_c = min(1, coverage / full_coverage)             (occupied cells of a grid
                                                                     over the query image)
    score        s = s_n * s_c

Hypotheses whose poses agree (within ``agree_translation`` and ``agree_rotation_deg``) are
independent evidence for the same pose; the confidence of a group is the noisy-OR of its
scores, ``1 - prod(1 - s_i)``, so two good references agreeing are surer than one, and one
weak reference stays weak.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import Pose, pose_error


@dataclass
class VerificationConfig:
    """Plausibility gates, agreement tolerances and the confidence's scales (see module doc)."""

    max_reference_distance_m: float = 50.0
    max_view_angle_deg: float = 90.0
    agree_translation: float = 2.0
    agree_rotation_deg: float = 10.0
    coverage_grid: int = 8
    full_coverage: float = 0.25
    inlier_scale: float = 60.0

    def __post_init__(self):
        for name in ("max_reference_distance_m", "max_view_angle_deg", "agree_translation",
                     "agree_rotation_deg", "full_coverage", "inlier_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"VerificationConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.coverage_grid < 1:
            raise ValueError(f"VerificationConfig.coverage_grid must be >= 1, got {self.coverage_grid}")


@dataclass
class Hypothesis:
    """One retrieved reference and what its matches say.

    uv [M,2] query pixels, points3d [M,3], match_scores [M], descriptors [M,d] (the reference's
    matching descriptors, on the device) are its kept matches; inliers [M] bool after RANSAC.
    """

    reference: int
    name: str
    rank: int
    retrieval_score: float
    uv: np.ndarray
    points3d: np.ndarray
    match_scores: np.ndarray
    descriptors: object
    pose: Pose | None = None
    inliers: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    coverage: float = 0.0
    view_angle_deg: float = float("nan")
    distance: float = float("nan")
    score: float = 0.0
    reason: str | None = None

    @property
    def num_matches(self) -> int:
        return len(self.uv)

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())

    @property
    def verified(self) -> bool:
        return self.pose is not None and self.reason is None

    def summary(self) -> dict:
        """JSON-friendly record (reports, diagnostics)."""
        return {"reference": self.name, "rank": self.rank, "retrieval_score": round(self.retrieval_score, 4),
                "matches": self.num_matches, "inliers": self.num_inliers,
                "coverage": round(self.coverage, 3), "score": round(self.score, 4),
                "reason": self.reason}


def inlier_coverage(uv: np.ndarray, width: int, height: int, grid: int) -> float:
    """Fraction of the cells of a grid x grid partition of the image holding a point of uv [M,2]."""
    if len(uv) == 0:
        return 0.0
    cx = np.clip((uv[:, 0] + 0.5) * grid / width, 0, grid - 1).astype(np.int64)
    cy = np.clip((uv[:, 1] + 0.5) * grid / height, 0, grid - 1).astype(np.int64)
    return len(np.unique(cy * grid + cx)) / float(grid * grid)


def view_angle_deg(a: Pose, b: Pose) -> float:
    """Angle between the optical axes of two world-to-camera poses, degrees."""
    cos = float(np.clip(a.R[2] @ b.R[2], -1.0, 1.0))
    return float(np.degrees(np.arccos(cos)))


def hypothesis_score(num_inliers: int, coverage: float, min_inliers: int,
                     config: VerificationConfig) -> float:
    """s = (1 - exp(-(n - n_min) / inlier_scale)) * min(1, coverage / full_coverage)."""
    s_n = 1.0 - np.exp(-max(0, num_inliers - min_inliers) / config.inlier_scale)
    s_c = min(1.0, coverage / config.full_coverage)
    return float(s_n * s_c)


def judge(h: Hypothesis, reference_pose: Pose, min_inliers: int, image_size: tuple[int, int],
          config: VerificationConfig) -> None:
    """Fill h's evidence, reason (when implausible) and score from its RANSAC pose and inliers.

    image_size: (width, height) of the query image.
    """
    if h.pose is None:
        h.score = 0.0
        return
    inlier_uv = h.uv[h.inliers]
    h.coverage = inlier_coverage(inlier_uv, *image_size, config.coverage_grid)
    h.distance = float(np.linalg.norm(h.pose.center - reference_pose.center))
    h.view_angle_deg = view_angle_deg(h.pose, reference_pose)
    distinct = len(np.unique(np.round(inlier_uv), axis=0))
    if distinct < min_inliers:
        h.reason = f"degenerate PnP inliers: only {distinct} distinct query pixels (< {min_inliers})"
    elif h.distance > config.max_reference_distance_m:
        h.reason = (f"implausible pose: {h.distance:.1f} m from the reference that matched "
                    f"(> max_reference_distance_m = {config.max_reference_distance_m})")
    elif h.view_angle_deg > config.max_view_angle_deg:
        h.reason = (f"implausible pose: looks {h.view_angle_deg:.0f} deg away from the reference "
                    f"that matched (> max_view_angle_deg = {config.max_view_angle_deg})")
    h.score = 0.0 if h.reason else hypothesis_score(h.num_inliers, h.coverage, min_inliers, config)


def poses_agree(a: Pose, b: Pose, config: VerificationConfig) -> bool:
    dt, dr = pose_error(a, b)
    return dt <= config.agree_translation and dr <= config.agree_rotation_deg


def group_of(best: Hypothesis, hypotheses: list[Hypothesis], config: VerificationConfig) -> list[Hypothesis]:
    """best and every other verified hypothesis whose pose agrees with it (best first)."""
    return [best] + [h for h in hypotheses if h is not best and h.verified
                     and poses_agree(h.pose, best.pose, config)]


def group_confidence(group: list[Hypothesis]) -> float:
    """Noisy-OR of the scores: 1 - prod(1 - s_i)."""
    return float(1.0 - np.prod([1.0 - h.score for h in group])) if group else 0.0
