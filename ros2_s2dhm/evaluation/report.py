"""Tables and JSON of evaluation and timing results.

``results.json`` has this shape (recall in percent; distances in the map's unit — metres
for a metric map, whatever ``unit`` says otherwise — and degrees; a median that is infinite
because half or more of the queries failed is written as ``null``, since JSON has no
infinity)::

    {"thresholds": [[0.25, 2], [0.5, 5], [5, 10]],
     "false_pose": [5, 10],
     "conditions": {"<cond>": {"queries": N,
                               "rpnp": {"recall": [h, m, c], "median_t_m": x, "median_r_deg": y,
                                        "failures": f, "false_poses": w},
                               "fpnp": {...}}},
     "all": {same shape as one condition},
     "weights": "<what the network was loaded from>",
     "timing_ms": {"<stage>": median milliseconds per query}}

:func:`score_outcomes` (the evaluate tool) adds ``"unit"``, ``"retrieval"`` ({"top_k",
"tolerance": [distance, max_angle_deg], "conditions": {"<cond>" and "all": {"queries", "top1",
"topk", "hub": {"reference", "queries", "share"}}}}, percentages) and ``"confidence"``
({"min_confidence", "correct": [distance, deg], "false_pose": [distance, deg],
"operating_point", "curve"}).
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ros2_s2dhm.evaluation.recall import (METHOD_LABELS, Bounds, GroupRecall, RecallReport,
                                          evaluate_recall, format_bound)
from ros2_s2dhm.evaluation.reliability import (confidence_curve, operating_point,
                                               retrieval_accuracy)
from ros2_s2dhm.evaluation.run import outcome_conditions, outcome_estimates
from ros2_s2dhm.localizer import STAGES

TIMING_ORDER = STAGES  # the pipeline's stage order


def _number(x: float) -> float | int | None:
    if not math.isfinite(x):
        return None
    return int(x) if float(x).is_integer() else float(x)


def _group_dict(group: GroupRecall) -> dict:
    out: dict = {"queries": group.queries}
    for method, score in group.methods.items():
        out[method] = {"recall": [float(r) for r in score.recall],
                       "median_t_m": _number(score.median_t_m),
                       "median_r_deg": _number(score.median_r_deg),
                       "failures": score.failures, "false_poses": score.false_poses}
    return out


def _bound(bound: tuple[float, float]) -> list:
    return [_number(bound[0]), _number(bound[1])]


def results_dict(report: RecallReport, weights: str, timing_ms: Mapping[str, float]) -> dict:
    """The ``results.json`` content (see the module docstring)."""
    return {
        "thresholds": [_bound(b) for b in report.thresholds],
        "false_pose": _bound(report.false_pose),
        "conditions": {c: _group_dict(g) for c, g in report.conditions.items()},
        "all": _group_dict(report.all),
        "weights": weights,
        "timing_ms": {k: float(v) for k, v in timing_ms.items()},
    }


def write_json(path: str | Path, content: dict) -> Path:
    """Write ``content`` as indented strict JSON (no NaN/Infinity), creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2, allow_nan=False) + "\n")
    return path


def _fmt_median(x: float, unit: str) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.3g}{unit}"


def format_recall_table(report: RecallReport, unit: str = "m") -> str:
    """Plain-text table: one row per condition and one for all queries, methods side by side;
    distances in the map's ``unit``. The last column counts the false poses, its header names
    the report's bound (``false>5m,10°``: returned poses beyond 5 ``unit`` or 10°)."""
    def label(bound: tuple[float, float]) -> str:
        return f"{bound[0]:g}{unit},{bound[1]:g}°"

    method_cols = [label(b) for b in report.thresholds] + [
        "med t", "med R", "fail", "false>" + label(report.false_pose)]
    widths = [max(6, len(c)) for c in method_cols]
    rows = {**report.conditions, "all": report.all}
    name_w = max([9] + [len(c) for c in rows])
    sep = " | "
    head1 = f"{'':<{name_w}} {'':>6}" + "".join(
        sep + f"{METHOD_LABELS.get(m, m):^{sum(widths) + len(widths) - 1}}" for m in report.methods)
    head2 = f"{'condition':<{name_w}} {'N':>6}" + "".join(
        sep + " ".join(f"{c:>{w}}" for c, w in zip(method_cols, widths)) for _ in report.methods)
    lines = [head1, head2, "-" * len(head2)]
    for cond, group in rows.items():
        if cond == "all":
            lines.append("-" * len(head2))
        cells = f"{cond:<{name_w}} {group.queries:>6}"
        for m in report.methods:
            s = group.methods[m]
            vals = [f"{r:.1f}" for r in s.recall] + [
                _fmt_median(s.median_t_m, unit), _fmt_median(s.median_r_deg, "°"), str(s.failures),
                str(s.false_poses)]
            cells += sep + " ".join(f"{v:>{w}}" for v, w in zip(vals, widths))
        lines.append(cells)
    return "\n".join(lines)


def summarize_timings(timings: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """Per-stage ``{"median": ms, "p90": ms, "count": n}`` over per-query timing dicts.

    Stages are ordered as the pipeline runs them; a stage missing from some queries
    (e.g. ``refine`` after a failed PnP) is summarised over the queries that have it.
    """
    stages = [s for s in TIMING_ORDER if any(s in t for t in timings)]
    stages += sorted({s for t in timings for s in t} - set(stages))
    out = {}
    for stage in stages:
        values = np.array([t[stage] for t in timings if stage in t], dtype=np.float64)
        out[stage] = {"median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
                      "count": int(values.size)}
    return out


def timing_medians(timings: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """``{stage: median ms}`` — the ``timing_ms`` entry of ``results.json``."""
    return {stage: s["median"] for stage, s in summarize_timings(timings).items()}


def format_timing_table(summaries: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    """Table of ``{column (e.g. device): {stage: {"median", "p90"}}}``, one row per stage."""
    columns = list(summaries)
    stages: list[str] = []
    for col in columns:
        stages += [s for s in summaries[col] if s not in stages]
    name_w = max([10] + [len(s) for s in stages])
    head = f"{'stage [ms]':<{name_w}}" + "".join(f" | {c + ' median':>14} {c + ' p90':>11}" for c in columns)
    lines = [head, "-" * len(head)]
    for stage in stages:
        row = f"{stage:<{name_w}}"
        for col in columns:
            s = summaries[col].get(stage)
            row += " | " + (f"{s['median']:>14.1f} {s['p90']:>11.1f}" if s else f"{'-':>14} {'-':>11}")
        lines.append(row)
    return "\n".join(lines)


def describe_weights(info) -> str:
    """One line naming the weights of a :class:`~ros2_s2dhm.features.checkpoints.WeightsInfo`.

    Random weights say so loudly: results obtained with them measure the pipeline, not
    the method.
    """
    sha = f"sha256 {info.sha256[:12]}"
    if info.random:
        text = f"RANDOM initialisation, not trained ({sha})"
    else:
        text = f"{info.kind} {info.path} ({sha})"
    if getattr(info, "netvlad_random", False) and not info.random:
        text += "; NetVLAD head RANDOM"
    return text


def format_retrieval_table(retrieval: Mapping[str, Mapping], top_k: int,
                           distance: float, max_angle_deg: float, unit: str = "m") -> str:
    """Retrieval per condition (:func:`~ros2_s2dhm.evaluation.reliability.retrieval_accuracy`):
    percent of queries whose top-1 / top-k shows the right place (a reference within
    ``distance`` ``unit`` and ``max_angle_deg``), and the hub: the largest percent of the
    condition's queries sharing one top-1 reference, and that reference."""
    name_w = max([9] + [len(c) for c in retrieval])
    lines = [f"right place: a retrieved reference within {distance:g} {unit} and "
             f"{max_angle_deg:g}° of the query's true pose; hub: the reference that is the "
             "top-1 of most queries",
             f"{'retrieval':<{name_w}} {'N':>4} {'top-1 %':>8} {f'top-{top_k} %':>8} "
             f"{'hub %':>6}  hub reference"]
    for cond, r in retrieval.items():
        h = r["hub"]
        lines.append(f"{cond:<{name_w}} {r['queries']:>4} {r['top1']:>8.1f} {r['topk']:>8.1f} "
                     f"{h['share']:>6.1f}  {h['reference'] or '-'}")
    return "\n".join(lines)


def format_operating_point(point: Mapping[str, float], min_confidence: float, queries: int,
                           unit: str, correct: tuple[float, float],
                           false_pose: tuple[float, float]) -> str:
    """One line: what min_confidence returns: poses, how many within ``correct`` and how many
    beyond ``false_pose`` (both ``(distance, deg)``, distances in ``unit``)."""
    return (f"min_confidence {min_confidence:g}: {point['returned']} of {queries} poses returned, "
            f"{point['correct']} within {format_bound(correct, unit)}, {point['false']} false "
            f"(beyond {format_bound(false_pose, unit)})")


@dataclass
class Scores:
    """Everything scored against the ground truth: the recall report, the confidence curve,
    the retrieval accuracy, the ``results.json`` content and the printed tables."""

    report: RecallReport
    curve: list[dict]
    retrieval: dict[str, dict]
    results: dict
    tables: list[str]


def score_outcomes(outcomes: Sequence, ground_truth: Mapping, reference_poses: Mapping,
                   bounds: Bounds, *, top_k: int, min_confidence: float, weights: str,
                   timing_ms: Mapping[str, float]) -> Scores:
    """Score query outcomes (:class:`~ros2_s2dhm.evaluation.run.QueryOutcome`) with every bound
    of ``bounds`` (distances in ``bounds.unit``, the map's).

    Args:
        ground_truth: ``{query name: Pose}``; reference_poses: ``{map name: Pose}``.
        top_k: references retrieved per query (the table's top-k column).
        min_confidence: the localizer's; the curve's operating point is read there.
        weights, timing_ms: copied into ``results.json`` (see the module docstring).
    Raises:
        DatasetError: a query has no ground truth or a retrieved reference has no pose.
    """
    report = evaluate_recall(outcome_conditions(outcomes), outcome_estimates(outcomes),
                             ground_truth, bounds.thresholds, bounds.false_pose)
    curve = confidence_curve(outcomes, ground_truth, bounds.correct, bounds.false_pose)
    retrieval = retrieval_accuracy(outcomes, ground_truth, reference_poses,
                                   bounds.retrieval_distance, bounds.retrieval_max_angle_deg)
    point = operating_point(curve, min_confidence)
    results = results_dict(report, weights, timing_ms)
    results["unit"] = bounds.unit
    results["retrieval"] = {"top_k": top_k,
                            "tolerance": [_number(bounds.retrieval_distance),
                                          _number(bounds.retrieval_max_angle_deg)],
                            "conditions": retrieval}
    results["confidence"] = {"min_confidence": min_confidence, "correct": _bound(bounds.correct),
                             "false_pose": _bound(bounds.false_pose), "operating_point": point,
                             "curve": curve}
    tables = [format_recall_table(report, bounds.unit),
              format_retrieval_table(retrieval, top_k, bounds.retrieval_distance,
                                     bounds.retrieval_max_angle_deg, bounds.unit),
              format_operating_point(point, min_confidence, len(outcomes), bounds.unit,
                                     bounds.correct, bounds.false_pose)]
    return Scores(report, curve, retrieval, results, tables)


def cascade_expansion(outcomes: Sequence, cascade_batch: int, top_k: int) -> dict:
    """How far the localizer's cascade went, over N query outcomes.

    ``reference_names`` of an outcome are the references it matched and verified, in retrieval
    order. Returns ``{"queries": N, "cascade_batch", "top_k", "verified_median",
    "verified_max", "past_batch", "past_top_k"}``: the median and largest number of references
    verified per query, and how many queries verified more than the first ``cascade_batch``
    (the cascade did not stop at its first batch) / more than ``top_k`` (nothing in the top-k
    reached min_confidence, so it looked ``retrieval_extra`` further).
    """
    verified = np.array([len(o.reference_names) for o in outcomes], dtype=np.int64)
    return {"queries": int(verified.size), "cascade_batch": int(cascade_batch), "top_k": int(top_k),
            "verified_median": float(np.median(verified)) if verified.size else 0.0,
            "verified_max": int(verified.max(initial=0)),
            "past_batch": int(np.sum(verified > cascade_batch)),
            "past_top_k": int(np.sum(verified > top_k))}


def format_cascade_expansion(cascade: Mapping) -> str:
    """One line of :func:`cascade_expansion`'s counts."""
    n = cascade["queries"]
    return (f"cascade: {cascade['past_batch']} of {n} queries verified past the first "
            f"{cascade['cascade_batch']} references, {cascade['past_top_k']} past top-"
            f"{cascade['top_k']}; references verified per query: median "
            f"{cascade['verified_median']:g}, max {cascade['verified_max']}")
