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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ros2_s2dhm.datasets.base import Dataset, QueryImage
from ros2_s2dhm.datasets.submission import check_name
from ros2_s2dhm.errors import DatasetError, S2DHMError
from ros2_s2dhm.evaluation.recall import METHODS, RecallReport
from ros2_s2dhm.geometry.pose import Pose
from ros2_s2dhm.localizer import LocalizationResult

log = logging.getLogger(__name__)


@dataclass
class QueryOutcome:
    """One query's :class:`~ros2_s2dhm.localizer.LocalizationResult` under its name and
    condition (poses world-to-camera). A query whose input the localizer refused
    (S2DHMError) has a failed result naming the error. Every other field of the result
    (``num_inliers``, ``timings_ms``, ``retrieved_names``, ...) reads through."""

    name: str
    condition: str
    result: LocalizationResult

    def __getattr__(self, name):
        if name == "result":  # not set yet (copying): no recursion
            raise AttributeError(name)
        return getattr(self.result, name)

    @property
    def success(self) -> bool:
        return bool(self.result.success) and self.result.pose is not None

    @property
    def failure_reason(self) -> str | None:
        return None if self.success else (self.result.failure_reason or "failed without a reason")

    @property
    def candidate_pose(self) -> Pose | None:
        """The best pose found, also below min_confidence (for the confidence's reports)."""
        return self.result.candidate_pose or (self.result.pose if self.success else None)

    def pose(self, method: str) -> Pose | None:
        """``"fpnp"``: the pose the pipeline returned (Feature-PnP's, or the verified RANSAC
        pose when refinement was discarded); ``"rpnp"``: the verified RANSAC-PnP pose; None on
        failure."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if not self.success:
            return None
        if method == "rpnp" and self.result.pose_rpnp is not None:
            return self.result.pose_rpnp
        return self.result.pose


def outcome_from_result(query: QueryImage, result: LocalizationResult) -> QueryOutcome:
    """A :class:`~ros2_s2dhm.localizer.LocalizationResult` of ``query`` as its outcome."""
    return QueryOutcome(query.name, query.condition, result)


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
            outcome = QueryOutcome(query.name, query.condition, LocalizationResult(
                success=False, failure_reason=f"{type(err).__name__}: {err}"))  # no timings
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
    """Per-query table: every query with status, failure reason, inliers, the references the
    cascade verified (how many: what a query's time follows), errors (if scored), time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["name", "condition", "success", "failure_reason", "confidence", "num_matches",
              "num_inliers", "refine_reason", "top_reference", "supporting_references",
              "references_verified", "total_ms"]
    if report is not None:
        header += [f"{m}_{e}" for m in report.methods for e in ("dt_m", "dr_deg")]
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for o in outcomes:
            row = [o.name, o.condition, int(o.success), o.failure_reason or "", f"{o.confidence:.4f}",
                   o.num_matches, o.num_inliers, o.refine_reason or "",
                   o.reference_names[0] if o.reference_names else "",
                   " ".join(o.supporting_references), len(o.reference_names),
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
