"""Tables and JSON of evaluation and timing results.

``results.json`` has exactly this shape (recall in percent; medians in metres and
degrees; a median that is infinite because half or more of the queries failed is
written as ``null``, since JSON has no infinity)::

    {"thresholds": [[0.25, 2], [0.5, 5], [5, 10]],
     "conditions": {"<cond>": {"queries": N,
                               "rpnp": {"recall": [h, m, c], "median_t_m": x, "median_r_deg": y,
                                        "failures": f, "false_poses": w},
                               "fpnp": {...}}},
     "all": {same shape as one condition},
     "weights": "<what the network was loaded from>",
     "timing_ms": {"<stage>": median milliseconds per query}}
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ros2_s2dhm.evaluation.recall import METHOD_LABELS, GroupRecall, RecallReport
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


def results_dict(report: RecallReport, weights: str, timing_ms: Mapping[str, float]) -> dict:
    """The ``results.json`` content (see the module docstring)."""
    return {
        "thresholds": [[_number(t), _number(r)] for t, r in report.thresholds],
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
    distances in the map's ``unit``."""
    thr = [f"{t:g}{unit},{r:g}°" for t, r in report.thresholds]
    method_cols = thr + ["med t", "med R", "fail", "false"]
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


def format_retrieval_table(retrieval: Mapping[str, Mapping[str, float]], top_k: int) -> str:
    """Retrieval accuracy per condition: top-1 and top-k reference within 5 m and 30 deg."""
    name_w = max([9] + [len(c) for c in retrieval])
    lines = [f"{'retrieval':<{name_w}} {'N':>4} {'top-1 %':>8} {f'top-{top_k} %':>8}"]
    for cond, r in retrieval.items():
        lines.append(f"{cond:<{name_w}} {r['queries']:>4} {r['top1']:>8.1f} {r['topk']:>8.1f}")
    return "\n".join(lines)


def format_operating_point(point: Mapping[str, float], min_confidence: float, queries: int,
                           unit: str = "m") -> str:
    """One line: what min_confidence returns (poses, correct at (0.25, 2 deg), false), in ``unit``."""
    return (f"min_confidence {min_confidence:g}: {point['returned']} of {queries} poses returned, "
            f"{point['correct']} within (0.25 {unit}, 2°), {point['false']} false "
            f"(> 5 {unit} or 10°)")
