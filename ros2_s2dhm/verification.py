"""Verification of pose hypotheses and the confidence of a pose.

Every retrieved reference is a hypothesis: its own matches, its own RANSAC-PnP. A hypothesis
is rejected when its pose is implausible for the reference that supplied the points (farther
than ``max_reference_distance_m`` from it, or looking more than ``max_view_angle_deg`` away
from its viewing direction), or when its inliers collapse onto a few query pixels. The rest
get a score in [0, 1] from their evidence, each term a ramp ``clip((x - low) / (high - low))``:

    inlier ratio   inliers / matches        wrong references still give hundreds of
                                            "inliers" among thousands of matches (repeated
                                            structure, image-position effects): their ratio
                                            stays low, a right one's does not
    spread         occupied cells of a grid over the query image
    count          1 - exp(-(n - n_min) / inlier_scale)
    score          product of the three

Hypotheses whose poses agree (within ``agree_translation`` and ``agree_rotation_deg``) are
independent evidence for the same pose: a group's evidence is the noisy-OR of its scores,
``1 - prod(1 - s_i)``. The confidence of the chosen group is that times a margin term: when
another hypothesis with a *different* pose has nearly as many inliers as the best one
(``margin = best / rival`` below ``rival_margin``), the place is ambiguous and the
confidence falls to 0 at margin 1.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .geometry import Pose, pose_error
from .options import option


@dataclass
class VerificationConfig:
    """Plausibility gates, agreement tolerances and the confidence's ramps (see module doc)."""

    max_reference_distance_m: float = option(
        50.0, "a pose farther than this (map units) from the reference that matched is rejected",
        name="max_reference_distance_m", low=1e-6)
    max_view_angle_deg: float = option(
        90.0, "a pose looking farther away than this from the matched reference's viewing "
              "direction is rejected", name="max_view_angle_deg", low=1e-6, high=180.0)
    agree_translation: float = option(2.0, "hypotheses within this distance (map units) agree",
                                      low=1e-6)
    agree_rotation_deg: float = option(10.0, "hypotheses within this rotation agree", low=1e-6)
    coverage_grid: int = option(8, "cells per side of the grid that measures inlier spread", low=1)
    coverage_low: float = option(0.15, "spread at which the spread term starts rising", low=0.0,
                                 high=1.0)
    coverage_high: float = option(0.4, "spread at which the spread term reaches 1", low=0.0,
                                  high=1.0)
    inlier_ratio_low: float = option(0.08, "inlier ratio at which its term starts rising",
                                     low=0.0, high=1.0)
    inlier_ratio_high: float = option(0.2, "inlier ratio at which its term reaches 1", low=0.0,
                                      high=1.0)
    inlier_scale: float = option(30.0, "inliers for the count term 1 - exp(-(n - n_min) / scale)",
                                 low=1e-6)
    rival_margin: float = option(1.5, "best/rival inlier ratio below which the place is ambiguous",
                                 low=1.0)

    def __post_init__(self):
        for name in ("max_reference_distance_m", "max_view_angle_deg", "agree_translation",
                     "agree_rotation_deg", "inlier_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"VerificationConfig.{name} must be > 0, got {getattr(self, name)}")
        if not (0 <= self.coverage_low < self.coverage_high <= 1
                and 0 <= self.inlier_ratio_low < self.inlier_ratio_high <= 1):
            raise ValueError("VerificationConfig: need 0 <= low < high <= 1 for coverage and inlier "
                             f"ratio, got ({self.coverage_low}, {self.coverage_high}) and "
                             f"({self.inlier_ratio_low}, {self.inlier_ratio_high})")
        if self.coverage_grid < 1 or not self.rival_margin > 1:
            raise ValueError(f"VerificationConfig: coverage_grid must be >= 1 and rival_margin > 1, "
                             f"got {self.coverage_grid}, {self.rival_margin}")


@dataclass
class Hypothesis:
    """One retrieved reference and what its matches say.

    uv [M,2] query pixels, points3d [M,3], match_scores [M], descriptors [M,d] (the reference's
    matching descriptors, on the device) and keypoint_ids [M] (their indices in the reference's
    map row) are its kept matches; inliers [M] bool after RANSAC.
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
    keypoint_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def num_matches(self) -> int:
        return len(self.uv)

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())

    @property
    def verified(self) -> bool:
        return self.pose is not None and self.reason is None


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


def _ramp(x: float, low: float, high: float) -> float:
    return float(np.clip((x - low) / (high - low), 0.0, 1.0))


def hypothesis_score(num_inliers: int, num_matches: int, coverage: float, min_inliers: int,
                     config: VerificationConfig) -> float:
    """Product of the inlier-ratio, spread and count terms (module doc), in [0, 1]."""
    s_count = 1.0 - np.exp(-max(0, num_inliers - min_inliers) / config.inlier_scale)
    s_ratio = _ramp(num_inliers / max(1, num_matches), config.inlier_ratio_low, config.inlier_ratio_high)
    s_cover = _ramp(coverage, config.coverage_low, config.coverage_high)
    return float(s_count * s_ratio * s_cover)


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
    h.score = 0.0 if h.reason else hypothesis_score(h.num_inliers, h.num_matches, h.coverage,
                                                    min_inliers, config)


def poses_agree(a: Pose, b: Pose, config: VerificationConfig) -> bool:
    dt, dr = pose_error(a, b)
    return dt <= config.agree_translation and dr <= config.agree_rotation_deg


def group_of(best: Hypothesis, hypotheses: list[Hypothesis], config: VerificationConfig) -> list[Hypothesis]:
    """best and every other verified hypothesis whose pose agrees with it (best first)."""
    return [best] + [h for h in hypotheses if h is not best and h.verified
                     and poses_agree(h.pose, best.pose, config)]


def group_confidence(group: list[Hypothesis], hypotheses: list[Hypothesis],
                     config: VerificationConfig) -> float:
    """Noisy-OR of the group's scores, times the margin over the strongest rival: a hypothesis
    with a pose (verified or not) that disagrees with the group's best (module doc)."""
    if not group:
        return 0.0
    evidence = 1.0 - float(np.prod([1.0 - h.score for h in group]))
    best = group[0]
    members = {id(h) for h in group}
    rivals = [h.num_inliers for h in hypotheses if h.pose is not None and id(h) not in members
              and not poses_agree(h.pose, best.pose, config)]
    if not rivals or max(rivals) == 0:
        return evidence
    margin = best.num_inliers / max(rivals)
    return evidence * _ramp(margin, 1.0, config.rival_margin)
