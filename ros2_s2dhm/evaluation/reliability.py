"""How far the pipeline's own judgement can be trusted: the confidence's precision-recall curve
and retrieval accuracy, per condition.

Confidence curve: every query with a candidate pose (returned or held back below
``min_confidence``) is ranked by confidence; at each confidence threshold c the poses with
confidence >= c would be returned. A returned pose is *false* when it is farther than
:data:`~ros2_s2dhm.evaluation.recall.FALSE_POSE` from the truth and *correct* when it is within
``correct`` (default (0.25 m, 2 deg)). precision = 1 - false / returned; recall = correct / all
queries. A user picks ``min_confidence`` from it.

Retrieval accuracy: a retrieved reference is right when its camera is within 5 m and 30 deg of
the query's true pose; top-1 and top-k (any of the k) in percent of the queries.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ros2_s2dhm.evaluation.recall import FALSE_POSE
from ros2_s2dhm.geometry.pose import Pose, pose_error

RETRIEVAL_TOLERANCE = (5.0, 30.0)


def confidence_curve(outcomes: Sequence, ground_truth: Mapping[str, Pose],
                     correct: tuple[float, float] = (0.25, 2.0)) -> list[dict]:
    """One point per distinct confidence (highest first), plus the point "return nothing".

    Each point: threshold, returned, correct, false, precision (1.0 when nothing returned),
    recall (percent of all queries).
    """
    total = len(outcomes)
    scored = []
    for o in outcomes:
        if o.candidate_pose is None:
            continue
        dt, dr = pose_error(o.candidate_pose, ground_truth[o.name])
        scored.append((float(o.confidence), dt <= correct[0] and dr <= correct[1],
                       dt > FALSE_POSE[0] or dr > FALSE_POSE[1]))
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


def retrieval_accuracy(outcomes: Sequence, ground_truth: Mapping[str, Pose],
                       reference_poses: Mapping[str, Pose],
                       tolerance: tuple[float, float] = RETRIEVAL_TOLERANCE) -> dict[str, dict]:
    """``{condition or "all": {"queries", "top1", "topk"}}`` in percent (see module doc)."""
    groups: dict[str, list[tuple[bool, bool]]] = {}
    for o in outcomes:
        truth = ground_truth[o.name]
        right = []
        for name in o.retrieved_names:
            dt, dr = pose_error(reference_poses[name], truth)
            right.append(dt <= tolerance[0] and dr <= tolerance[1])
        entry = (bool(right and right[0]), any(right))
        groups.setdefault(o.condition, []).append(entry)
        groups.setdefault("all", []).append(entry)
    out = {}
    for cond in sorted(g for g in groups if g != "all") + (["all"] if "all" in groups else []):
        hits = np.array(groups[cond], dtype=bool).reshape(-1, 2)
        out[cond] = {"queries": len(hits), "top1": 100.0 * float(hits[:, 0].mean()),
                     "topk": 100.0 * float(hits[:, 1].mean())}
    return out


def plot_confidence_curve(curve: Sequence[dict], path, min_confidence: float | None = None):
    """Precision (1 - false / returned) against recall, with the operating point marked."""
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
    ax.set_xlabel("recall at (0.25 m, 2°) [%]")
    ax.set_ylabel("precision: returned poses not false [%]")
    ax.set_title("confidence threshold sweep")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
