"""How far the pipeline's own judgement can be trusted: the confidence's precision-recall curve
and retrieval accuracy, per condition. Distances are in the map's unit, angles in degrees; the
defaults of every bound live in :mod:`ros2_s2dhm.evaluation.recall`.

Confidence curve: every query with a candidate pose (returned or held back below
``min_confidence``) is ranked by confidence; at each confidence threshold c the poses with
confidence >= c would be returned. A returned pose is *false* when it is beyond ``false_pose``
(default :data:`~ros2_s2dhm.evaluation.recall.FALSE_POSE`, (5, 10°)) from the truth and
*correct* when it is within ``correct`` (default
:data:`~ros2_s2dhm.evaluation.recall.CORRECT_POSE`, (0.25, 2°)). precision = 1 - false /
returned; recall = correct / all queries. A user picks ``min_confidence`` from it.

Retrieval accuracy: a retrieved reference shows the *right place* when its camera centre is
within ``distance`` (default :data:`~ros2_s2dhm.evaluation.recall.RETRIEVAL_DISTANCE`, 5) of
the query's true centre **and** its rotation differs from the query's true rotation by at most
``max_angle_deg`` (default 30°). The angle is kept on purpose: a reference at the same spot
looking the other way (a road driven in both directions) shares no scene with the query and
cannot be matched, so it is no help to the localizer. top-1 and top-k (any of the k) are in
percent of the queries of a group; a query that retrieved nothing is a miss. The *hub* of a
group is the reference that is the top-1 of the most of its queries; its share (percent of the
group's queries) shows retrieval collapsing onto one image (e.g. every night query retrieving
the same dark reference), whether or not that reference is the right place.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.evaluation.recall import (CORRECT_POSE, FALSE_POSE, RETRIEVAL_DISTANCE,
                                          RETRIEVAL_MAX_ANGLE_DEG, format_bound, is_false_pose)
from ros2_s2dhm.geometry.pose import Pose, pose_error


def confidence_curve(outcomes: Sequence, ground_truth: Mapping[str, Pose],
                     correct: tuple[float, float] = CORRECT_POSE,
                     false_pose: tuple[float, float] = FALSE_POSE) -> list[dict]:
    """One point per distinct confidence (highest first), plus the point "return nothing".

    Each point: threshold, returned, correct (within ``correct`` (distance, deg)), false
    (beyond ``false_pose`` (distance, deg)), precision (1.0 when nothing returned), recall
    (percent of all queries).
    """
    total = len(outcomes)
    scored = []
    for o in outcomes:
        if o.candidate_pose is None:
            continue
        dt, dr = pose_error(o.candidate_pose, ground_truth[o.name])
        scored.append((float(o.confidence), dt <= correct[0] and dr <= correct[1],
                       bool(is_false_pose(dt, dr, false_pose))))
    scored.sort(key=lambda x: -x[0])
    points = [{"threshold": 1.0 + 1e-9, "returned": 0, "correct": 0, "false": 0,
               "precision": 1.0, "recall": 0.0}]
    n_ok = n_false = 0
    for i, (conf, ok, false) in enumerate(scored):
        n_ok += ok
        n_false += false
        if i + 1 < len(scored) and scored[i + 1][0] == conf:
            continue  # ties enter together
        returned = i + 1
        points.append({"threshold": conf, "returned": returned, "correct": n_ok, "false": n_false,
                       "precision": 1.0 - n_false / returned,
                       "recall": 100.0 * n_ok / total if total else 0.0})
    return points


def operating_point(curve: Sequence[dict], threshold: float) -> dict:
    """The curve's point at ``min_confidence = threshold`` (poses with confidence >= threshold)."""
    eligible = [p for p in curve if p["threshold"] >= threshold]
    return eligible[-1] if eligible else curve[0]


def retrieval_hits(outcome, truth: Pose, reference_poses: Mapping[str, Pose],
                   distance: float = RETRIEVAL_DISTANCE,
                   max_angle_deg: float = RETRIEVAL_MAX_ANGLE_DEG) -> list[bool]:
    """Per retrieved reference of ``outcome`` (rank order): whether it shows the right place
    (see the module doc). Raises DatasetError for a reference without a pose."""
    hits = []
    for name in outcome.retrieved_names:
        if name not in reference_poses:
            raise DatasetError(f"query {outcome.name}: retrieved reference {name!r} has no pose "
                               "in the map; evaluate with the map the queries were localized in")
        dt, dr = pose_error(reference_poses[name], truth)
        hits.append(dt <= distance and dr <= max_angle_deg)
    return hits


def hub(top1: Sequence[str | None]) -> dict:
    """``{"reference", "queries", "share"}``: the name that is the top-1 of most of the N
    queries (``top1`` [N], None where a query retrieved nothing; ties: the first name in sorted
    order), how many queries have it and their percent of N (0 and None when none retrieved)."""
    counts = Counter(n for n in top1 if n is not None)
    if not counts:
        return {"reference": None, "queries": 0, "share": 0.0}
    name, count = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {"reference": name, "queries": count, "share": 100.0 * count / len(top1)}


def retrieval_accuracy(outcomes: Sequence, ground_truth: Mapping[str, Pose],
                       reference_poses: Mapping[str, Pose], distance: float = RETRIEVAL_DISTANCE,
                       max_angle_deg: float = RETRIEVAL_MAX_ANGLE_DEG) -> dict[str, dict]:
    """``{condition, ..., "all": {"queries", "top1", "topk", "hub"}}``: per condition (sorted)
    and over all queries, the percent of queries whose top-1 / any of whose retrieved references
    shows the right place (``distance`` in the map's unit, ``max_angle_deg``), and the
    :func:`hub` of their top-1 references (see the module doc)."""
    groups: dict[str, list[tuple[bool, bool, str | None]]] = {}
    for o in outcomes:
        right = retrieval_hits(o, ground_truth[o.name], reference_poses, distance, max_angle_deg)
        entry = (bool(right and right[0]), any(right),
                 o.retrieved_names[0] if o.retrieved_names else None)
        groups.setdefault(o.condition, []).append(entry)
        groups.setdefault("all", []).append(entry)
    out = {}
    for cond in sorted(g for g in groups if g != "all") + (["all"] if "all" in groups else []):
        entries = groups[cond]
        hits = np.array([e[:2] for e in entries], dtype=bool).reshape(-1, 2)
        out[cond] = {"queries": len(entries), "top1": 100.0 * float(hits[:, 0].mean()),
                     "topk": 100.0 * float(hits[:, 1].mean()), "hub": hub([e[2] for e in entries])}
    return out


def plot_confidence_curve(curve: Sequence[dict], path, min_confidence: float | None = None,
                          correct: tuple[float, float] = CORRECT_POSE, unit: str = "m"):
    """Precision (1 - false / returned) against recall at ``correct`` (distance in ``unit``,
    deg), with the operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    ax.plot([p["recall"] for p in curve], [100 * p["precision"] for p in curve], "-o", ms=3)
    if min_confidence is not None:
        op = operating_point(curve, min_confidence)
        ax.plot([op["recall"]], [100 * op["precision"]], "r*", ms=12,
                label=f"min_confidence {min_confidence:g}: {op['false']} false of {op['returned']}")
        ax.legend(loc="lower left")
    ax.set_xlabel(f"recall at {format_bound(correct, unit)} [%]")
    ax.set_ylabel("precision: returned poses not false [%]")
    ax.set_title("confidence threshold sweep")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
