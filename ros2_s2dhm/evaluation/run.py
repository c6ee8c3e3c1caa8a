"""The evaluation loop: localize a list of queries and keep one outcome per query.

Shared by ``offline_tools/evaluate.py``, the benchmark and the ROS demo. Every query
gives exactly one :class:`QueryOutcome`, failures included (with their reason), so
no query is ever silently dropped from submission files, tables or recall.

Methods: ``rpnp`` is the RANSAC-PnP pose; ``fpnp`` is the pipeline's final pose
(Feature-PnP when it ran, else the RANSAC-PnP pose it started from). A query the
localizer reports as failed — or whose image or camera raised an
:class:`~ros2_s2dhm.errors.S2DHMError` — is a failure for both methods.
"""
from __future__ import annotations

import csv
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ros2_s2dhm.datasets.base import Dataset, QueryImage
from ros2_s2dhm.errors import DatasetError, S2DHMError
from ros2_s2dhm.evaluation.recall import METHODS, RecallReport
from ros2_s2dhm.datasets.submission import check_name
from ros2_s2dhm.geometry.pose import Pose

log = logging.getLogger(__name__)


@dataclass
class QueryOutcome:
    """What happened to one query (poses are world-to-camera)."""

    name: str
    condition: str
    success: bool
    failure_reason: str | None
    pose_rpnp: Pose | None
    pose_fpnp: Pose | None
    num_matches: int = 0
    num_inliers: int = 0
    refine_reason: str | None = None
    reference_names: list[str] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)
    confidence: float = 0.0
    candidate_pose: Pose | None = None  # best pose found, even below min_confidence
    retrieved_names: list[str] = field(default_factory=list)
    supporting_references: list[str] = field(default_factory=list)

    def pose(self, method: str) -> Pose | None:
        """The estimate of ``method`` (``"rpnp"`` or ``"fpnp"``), ``None`` on failure."""
        return {"rpnp": self.pose_rpnp, "fpnp": self.pose_fpnp}[method]


def outcome_from_result(query: QueryImage, result) -> QueryOutcome:
    """Turn a :class:`~ros2_s2dhm.localizer.LocalizationResult` into a :class:`QueryOutcome`."""
    ok = bool(result.success) and result.pose is not None
    return QueryOutcome(
        name=query.name, condition=query.condition, success=ok,
        failure_reason=None if ok else (result.failure_reason or "failed without a reason"),
        pose_rpnp=(result.pose_rpnp if result.pose_rpnp is not None else result.pose) if ok else None,
        pose_fpnp=result.pose if ok else None,
        num_matches=int(result.num_matches), num_inliers=int(result.num_inliers),
        refine_reason=result.refine_reason, reference_names=list(result.reference_names),
        timings_ms={k: float(v) for k, v in result.timings_ms.items()},
        confidence=float(result.confidence),
        candidate_pose=result.candidate_pose or (result.pose if ok else None),
        retrieved_names=list(result.retrieved_names),
        supporting_references=list(result.supporting_references))


def evaluate_queries(localizer, queries: Sequence[QueryImage],
                     read_image: Callable[[Path], np.ndarray], *, exclude_self: bool = False,
                     progress: bool = True) -> list[QueryOutcome]:
    """Localize every query with ``localizer`` and return one outcome per query, in order.

    Args:
        localizer: a :class:`~ros2_s2dhm.localizer.Localizer` (anything with ``localize``).
        queries: the queries; each one's ``camera`` is passed to the localizer.
        read_image: path -> RGB uint8 image [H, W, 3] (e.g. ``datasets.base.read_image``).
        exclude_self: local validation — pass ``exclude_reference=query.name`` so the
            map image identical to the query is not retrieved.
        progress: show a progress bar.
    """
    outcomes = []
    bar = tqdm(queries, desc="localizing", unit="query", disable=not progress)
    failures = 0
    for query in bar:
        kwargs = {"exclude_reference": query.name} if exclude_self else {}
        try:
            result = localizer.localize(read_image(query.path), query.camera, **kwargs)
        except S2DHMError as err:
            log.warning("query %s failed: %s", query.name, err)
            outcome = QueryOutcome(query.name, query.condition, False,
                                   f"{type(err).__name__}: {err}", None, None)  # no timings
        else:
            outcome = outcome_from_result(query, result)
        failures += not outcome.success
        bar.set_postfix(failed=failures)
        outcomes.append(outcome)
    return outcomes


def outcome_estimates(outcomes: Iterable[QueryOutcome],
                      methods: Sequence[str] = METHODS) -> dict[str, dict[str, Pose | None]]:
    """``{method: {query name: Pose or None}}`` in query order (input of recall and submissions)."""
    outcomes = list(outcomes)
    return {m: {o.name: o.pose(m) for o in outcomes} for m in methods}


def outcome_conditions(outcomes: Iterable[QueryOutcome]) -> dict[str, str]:
    """``{query name: condition}`` of all outcomes."""
    return {o.name: o.condition for o in outcomes}


def select_queries(queries: Sequence[QueryImage], conditions: Sequence[str] | None = None,
                   limit: int | None = None) -> list[QueryImage]:
    """Keep the queries of ``conditions`` (all if ``None``), at most ``limit`` per condition.

    The ``limit`` queries of a condition are spread evenly over its list, so a short
    run still covers the whole traversal. Raises :class:`DatasetError` for a condition
    without queries.
    """
    by_condition: dict[str, list[QueryImage]] = {}
    for q in queries:
        by_condition.setdefault(q.condition, []).append(q)
    if conditions is not None:
        unknown = [c for c in conditions if c not in by_condition]
        if unknown:
            raise DatasetError(f"no queries of condition(s) {', '.join(unknown)}; the dataset has "
                               f"{', '.join(sorted(by_condition)) or 'no queries'}")
        by_condition = {c: by_condition[c] for c in conditions}
    keep = set()
    for items in by_condition.values():
        if limit is not None and len(items) > limit:
            items = [items[i] for i in np.linspace(0, len(items) - 1, max(limit, 0)).round().astype(int)]
        keep.update(id(q) for q in items)
    return [q for q in queries if id(q) in keep]


def reference_queries(dataset: Dataset) -> tuple[list[QueryImage], dict[str, Pose]]:
    """Local validation: the reference images as queries, with their poses as ground truth.

    A reference's condition is the first folder of its name (``overcast-reference`` for
    ``overcast-reference/rear/<ts>.jpg``), ``reference`` for a bare name.
    """
    queries = [QueryImage(name=r.name, path=r.path, camera=r.camera,
                          condition=r.name.split("/")[0] if "/" in r.name else "reference")
               for r in dataset.references]
    return queries, {r.name: r.pose for r in dataset.references}


def _fmt(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.6g}"


def write_outcomes_csv(path: str | Path, outcomes: Sequence[QueryOutcome],
                       report: RecallReport | None = None) -> Path:
    """Per-query table: every query with status, failure reason, inliers, errors (if scored), time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["name", "condition", "success", "failure_reason", "confidence", "num_matches",
              "num_inliers", "refine_reason", "top_reference", "supporting_references", "total_ms"]
    if report is not None:
        header += [f"{m}_{e}" for m in report.methods for e in ("dt_m", "dr_deg")]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for o in outcomes:
            row = [o.name, o.condition, int(o.success), o.failure_reason or "", f"{o.confidence:.4f}",
                   o.num_matches, o.num_inliers, o.refine_reason or "",
                   o.reference_names[0] if o.reference_names else "",
                   " ".join(o.supporting_references),
                   f"{o.timings_ms['total']:.1f}" if "total" in o.timings_ms else ""]
            if report is not None:
                for m in report.methods:
                    row += [_fmt(v) for v in report.errors[m][o.name]]
            writer.writerow(row)
    return path


def write_retrieval_pairs(path: str | Path, outcomes: Iterable[QueryOutcome]) -> int:
    """Write hloc's pairs format: one ``query_name reference_name`` line per retrieved reference.

    Every query's retrieved top-k (``retrieved_names``) in rank order, queries in the order of
    ``outcomes``, failed queries included; a query that never reached retrieval (its image or
    camera was refused) has no line. Names are those of the submission files (queries) and
    the map (references). Parent folders are created. Returns the number of lines.
    Raises DatasetError for a name that is empty or contains whitespace.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{check_name(o.name)} {check_name(ref, 'reference')}"
             for o in outcomes for ref in o.retrieved_names]
    path.write_text("".join(line + "\n" for line in lines))
    return len(lines)


def failure_counts(outcomes: Iterable[QueryOutcome]) -> Mapping[str, int]:
    """``{failure reason: count}`` over the failed queries, most frequent first."""
    counts: dict[str, int] = {}
    for o in outcomes:
        if not o.success:
            counts[o.failure_reason or "unknown"] = counts.get(o.failure_reason or "unknown", 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
