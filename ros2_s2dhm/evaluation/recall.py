"""Localization recall at the visuallocalization.net thresholds, per condition and over all.

A query counts as localized at a threshold ``(t, r_deg)`` when its camera-centre
distance to the ground truth is <= ``t`` (map units) and its rotation error is <=
``r_deg`` degrees (:func:`ros2_s2dhm.geometry.pose.pose_error`). A failed query (no
estimate) has infinite errors: it counts as a miss at every threshold and enters
the medians as ``inf``, so a median is ``inf`` once half or more of the queries of
a group failed. Recall is in percent of all queries of the group, failures included.

Every distance here is in the map's unit (metres for a metric map; an SfM model without scale
has its own unit, see ``Dataset.unit``), so each bound is a parameter: this module holds the
one default of each (:data:`REPORT_THRESHOLDS`, :data:`FALSE_POSE`, :data:`CORRECT_POSE`,
:data:`RETRIEVAL_DISTANCE`), and :class:`Bounds` carries the set one evaluation uses.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.geometry.pose import Pose, pose_error

THRESHOLDS: tuple[tuple[float, float], ...] = ((0.25, 2.0), (0.5, 5.0), (5.0, 10.0))
#: What the tools report: a tight threshold (where Feature-PnP's gain shows on synthetic data)
#: beside the standard three.
REPORT_THRESHOLDS: tuple[tuple[float, float], ...] = ((0.05, 0.5),) + THRESHOLDS
#: A returned pose beyond this (distance, deg) is a false pose: one a robot must never receive.
FALSE_POSE: tuple[float, float] = (5.0, 10.0)
#: A pose within this (distance, deg) is correct on the confidence curve (its recall axis).
CORRECT_POSE: tuple[float, float] = THRESHOLDS[0]
#: A retrieved reference whose camera centre is within this distance of the query's true centre
#: (and whose viewing direction is within RETRIEVAL_MAX_ANGLE_DEG of it) shows the right place.
RETRIEVAL_DISTANCE: float = 5.0
RETRIEVAL_MAX_ANGLE_DEG: float = 30.0
METHODS: tuple[str, ...] = ("rpnp", "fpnp")
METHOD_LABELS = {"rpnp": "RANSAC-PnP", "fpnp": "Feature-PnP"}


@dataclass(frozen=True)
class MethodRecall:
    """Scores of one method on one group of queries."""

    recall: list[float]  # percent, one per threshold
    median_t_m: float  # inf when half or more failed
    median_r_deg: float
    failures: int
    false_poses: int = 0  # returned poses with dt or dr beyond the report's false_pose bound


@dataclass(frozen=True)
class Bounds:
    """Every bound of one evaluation; distances in the map's ``unit``, angles in degrees.

    thresholds: recall thresholds ``(distance, deg)``; false_pose: a returned pose beyond
    ``(distance, deg)`` (either one) is false; correct: a pose within ``(distance, deg)`` is
    correct on the confidence curve; retrieval_distance / retrieval_max_angle_deg: a retrieved
    reference this close to the query's true pose shows the right place.
    """

    thresholds: tuple[tuple[float, float], ...] = REPORT_THRESHOLDS
    false_pose: tuple[float, float] = FALSE_POSE
    correct: tuple[float, float] = CORRECT_POSE
    retrieval_distance: float = RETRIEVAL_DISTANCE
    retrieval_max_angle_deg: float = RETRIEVAL_MAX_ANGLE_DEG
    unit: str = "m"

    def describe(self) -> str:
        """The bounds in words, e.g. for the warning about a map that is not in metres."""
        u = self.unit
        return (f"recall thresholds {' '.join(format_bound(b, u) for b in self.thresholds)}, "
                f"false pose > {format_bound(self.false_pose, u)}, correct pose "
                f"<= {format_bound(self.correct, u)}, right place within "
                f"{self.retrieval_distance:g} {u} and {self.retrieval_max_angle_deg:g}°")


def format_bound(bound: tuple[float, float], unit: str = "m") -> str:
    """``(0.25, 2.0)`` -> ``'(0.25 m, 2°)'``, the distance in ``unit``."""
    return f"({bound[0]:g} {unit}, {bound[1]:g}°)"


@dataclass(frozen=True)
class GroupRecall:
    """Scores of all methods on one group (a condition, or all queries)."""

    queries: int
    methods: dict[str, MethodRecall]


@dataclass
class RecallReport:
    """Per-condition and overall scores plus the per-query errors they come from.

    ``errors[method][name] = (dt, dr_deg)``, dt in the map's unit, ``(inf, inf)`` for a
    failure. ``false_pose``: the ``(distance, deg)`` bound the false poses were counted at.
    """

    thresholds: tuple[tuple[float, float], ...]
    methods: tuple[str, ...]
    conditions: dict[str, GroupRecall]
    all: GroupRecall
    errors: dict[str, dict[str, tuple[float, float]]]
    query_conditions: dict[str, str] = field(default_factory=dict)
    false_pose: tuple[float, float] = FALSE_POSE

    def group_errors(self, method: str, condition: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(dt [N], dr [N])`` of ``method`` on one condition (``None``: all queries)."""
        names = [n for n, c in self.query_conditions.items() if condition is None or c == condition]
        err = np.array([self.errors[method][n] for n in names], dtype=np.float64).reshape(-1, 2)
        return err[:, 0], err[:, 1]


def recall_percent(dt: np.ndarray, dr: np.ndarray,
                   thresholds: Sequence[tuple[float, float]] = THRESHOLDS) -> list[float]:
    """Percent of the N queries with ``dt <= t_m`` and ``dr <= r_deg``, per threshold (0 if N == 0)."""
    dt, dr = np.asarray(dt, dtype=np.float64), np.asarray(dr, dtype=np.float64)
    if dt.size == 0:
        return [0.0 for _ in thresholds]
    return [100.0 * float(np.mean((dt <= t) & (dr <= r))) for t, r in thresholds]


def is_false_pose(dt, dr, false_pose: tuple[float, float] = FALSE_POSE):
    """Whether a returned pose with errors ``dt`` (map unit) and ``dr`` (deg) is false: beyond
    ``false_pose[0]`` or ``false_pose[1]``. Scalars or arrays of one shape."""
    return (dt > false_pose[0]) | (dr > false_pose[1])


def summarize_errors(dt: np.ndarray, dr: np.ndarray,
                     thresholds: Sequence[tuple[float, float]] = THRESHOLDS,
                     false_pose: tuple[float, float] = FALSE_POSE) -> MethodRecall:
    """Recall, medians (failures as ``inf``), failures and false poses of one method on one group.

    dt [N] in the map's unit and dr [N] in degrees, ``inf`` for a failure; a returned pose is
    false beyond ``false_pose`` ``(distance, deg)``.
    """
    dt, dr = np.asarray(dt, dtype=np.float64), np.asarray(dr, dtype=np.float64)
    median = (lambda x: float(np.median(x)) if x.size else float("inf"))
    returned = np.isfinite(dt)
    false = returned & is_false_pose(dt, dr, false_pose)
    return MethodRecall(recall=recall_percent(dt, dr, thresholds), median_t_m=median(dt),
                        median_r_deg=median(dr), failures=int(np.sum(~returned)),
                        false_poses=int(np.sum(false)))


def query_errors(estimates: Mapping[str, Pose | None], ground_truth: Mapping[str, Pose],
                 names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``{name: (dt_m, dr_deg)}`` for ``names``; missing or ``None`` estimates give ``(inf, inf)``."""
    errors = {}
    for name in names:
        estimate = estimates.get(name)
        if estimate is None:
            errors[name] = (float("inf"), float("inf"))
        else:
            dt, dr = pose_error(estimate, ground_truth[name])
            errors[name] = (float(dt), float(dr))
    return errors


def evaluate_recall(query_conditions: Mapping[str, str],
                    estimates: Mapping[str, Mapping[str, Pose | None]],
                    ground_truth: Mapping[str, Pose],
                    thresholds: Sequence[tuple[float, float]] = THRESHOLDS,
                    false_pose: tuple[float, float] = FALSE_POSE) -> RecallReport:
    """Score every method of ``estimates`` on every query of ``query_conditions``.

    Args:
        query_conditions: ``{query name: condition}`` — the full query set; a query
            missing from a method's estimates counts as a failure, never as absent.
        estimates: ``{method: {query name: Pose or None}}``, e.g. methods ``rpnp``, ``fpnp``.
        ground_truth: ``{query name: Pose}``; it may hold more names than the queries.
        thresholds: recall thresholds ``(distance, deg)``, distances in the map's unit.
        false_pose: a returned pose beyond ``(distance, deg)`` counts as false.
    Raises:
        DatasetError: a query has no ground-truth pose.
    """
    missing = [n for n in query_conditions if n not in ground_truth]
    if missing:
        raise DatasetError(
            f"ground truth lacks {len(missing)} of {len(query_conditions)} queries "
            f"(e.g. {', '.join(missing[:3])}); names must match the query names "
            "('rear/<timestamp>.jpg' for RobotCar, the basename for CMU)")
    names = list(query_conditions)
    errors = {m: query_errors(estimates[m], ground_truth, names) for m in estimates}
    thresholds = tuple((float(t), float(r)) for t, r in thresholds)
    false_pose = (float(false_pose[0]), float(false_pose[1]))

    def group(selected: list[str]) -> GroupRecall:
        scores = {}
        for method, errs in errors.items():
            e = np.array([errs[n] for n in selected], dtype=np.float64).reshape(-1, 2)
            scores[method] = summarize_errors(e[:, 0], e[:, 1], thresholds, false_pose)
        return GroupRecall(queries=len(selected), methods=scores)

    conditions = {c: group([n for n in names if query_conditions[n] == c])
                  for c in sorted(set(query_conditions.values()))}
    return RecallReport(thresholds=thresholds, methods=tuple(estimates), conditions=conditions,
                        all=group(names), errors=errors, query_conditions=dict(query_conditions),
                        false_pose=false_pose)
