"""Measurements of backbone variants (:mod:`ros2_s2dhm.features.backbone_variants`).

- :func:`localizer_call_options` — the keyword options the localizer calls its network with,
  so that the forward is timed as the localizer runs it.
- :func:`time_forward` — the network forward alone: the first call (compilation, session
  warm-up) apart, then median / p90 ms over the timed inputs after the warm-up inputs.
- :func:`pose_deltas` — how far a variant's poses moved from the reference variant's, query
  by query, over the queries both localized.
- :func:`variant_row` / :func:`format_variants_table` — one JSON row per variant and the
  printed table (``benchmark --backbone-variants``).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import torch

from ros2_s2dhm.geometry.pose import pose_error

__all__ = ["localizer_call_options", "time_forward", "pose_deltas", "variant_row", "format_variants_table"]

log = logging.getLogger(__name__)


class _CallRecorder:
    """Stands in for a localizer's network and keeps the keyword options of its last call."""

    def __init__(self, network):
        self.network, self.options = network, None

    def __call__(self, images, **options):
        self.options = options
        return self.network(images, **options)


def localizer_call_options(localizer, image: np.ndarray, camera) -> dict:
    """The keyword options (e.g. ``detail``, ``hypercolumn``, ``autocast_bf16``) with which
    ``localizer`` calls ``localizer.network``, recorded from its feature stage on one image
    (RGB uint8 [H, W, 3] of ``camera``)."""
    network = localizer.network
    recorder = _CallRecorder(network)
    localizer.network = recorder
    try:
        localizer.features(image, camera)
    finally:
        localizer.network = network
    if recorder.options is None:
        raise RuntimeError("the localizer's feature stage did not call its network")
    return recorder.options


def time_forward(variant, inputs: Sequence[torch.Tensor], warmup: int,
                 budget_s: float | None = None, **call_options) -> dict:
    """Time ``variant(x, **call_options)`` under ``torch.no_grad`` on ``inputs`` ([1, 3, H, W]).

    The first ``warmup`` inputs are warm-up calls (with none, one extra call on the first
    input), the rest are timed. ``first_ms`` is the first call (a compiled variant compiles
    there). ``budget_s`` bounds the wall time: a further call is skipped when the last one
    would take it past the budget, except the first call and the first timed call (``count``
    says how many were timed).

    Returns ``{"first_ms", "median", "p90", "count"}`` (ms).
    """
    warm, timed = list(inputs[:warmup]) or list(inputs[warmup:warmup + 1]), list(inputs[warmup:])
    if not timed:
        raise ValueError("time_forward: no timed inputs after the warm-up ones")
    start, calls = time.perf_counter(), []

    def call(x) -> float:
        t0 = time.perf_counter()
        variant(x, **call_options)
        calls.append(1e3 * (time.perf_counter() - t0))
        return calls[-1]

    def fits() -> bool:
        return budget_s is None or time.perf_counter() - start + calls[-1] / 1e3 <= budget_s

    times = []
    with torch.no_grad():
        for i, x in enumerate(warm):
            if i == 0 or fits():
                call(x)
        for x in timed:
            if times and not fits():
                log.warning("forward timing stopped after %d of %d inputs: one more would exceed %.0f s",
                            len(times), len(timed), budget_s)
                break
            times.append(call(x))
    first_ms = calls[0]
    return {"first_ms": first_ms, "median": float(np.median(times)),
            "p90": float(np.percentile(times, 90)), "count": len(times)}


def pose_deltas(reference: Sequence, outcomes: Sequence) -> dict:
    """Per-query pose differences of ``outcomes`` from ``reference`` (QueryOutcome lists of the
    same queries in the same order; the shorter one bounds the comparison), over the queries
    localized in both: camera-centre distance (map units) and rotation angle (deg) of the final
    poses. Returns ``{"both", "translation_median", "translation_max", "rotation_median_deg",
    "rotation_max_deg"}`` (None without a common query)."""
    pairs = [(r.pose("fpnp"), o.pose("fpnp")) for r, o in zip(reference, outcomes)
             if r.success and o.success]
    if not pairs:
        return {"both": 0, "translation_median": None, "translation_max": None,
                "rotation_median_deg": None, "rotation_max_deg": None}
    dt, dr = np.array([pose_error(o, r) for r, o in pairs]).T
    return {"both": len(pairs), "translation_median": float(np.median(dt)),
            "translation_max": float(dt.max()), "rotation_median_deg": float(np.median(dr)),
            "rotation_max_deg": float(dr.max())}


def variant_row(name: str, build_s: float, forward: dict, reference_forward: dict | None,
                run: dict, deltas: dict) -> dict:
    """The JSON row of one variant: build time, forward timing and its speed-up over the
    reference's median, the localizer run (``run``: ``benchmark.time_queries``'s summary)
    and the pose deltas; ``error`` None."""
    speedup = (reference_forward["median"] / forward["median"]
               if reference_forward and forward["median"] > 0 else None)
    total = run["stages"].get("total", {})
    return {"variant": name, "error": None, "build_s": build_s, "forward_ms": forward,
            "speedup": speedup, "queries": run["queries"], "localized": run["localized"],
            "query_ms": {"median": total.get("median"), "p90": total.get("p90")},
            "stages": run["stages"], "pose_delta": deltas}


def _num(x, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def format_variants_table(rows: Sequence[dict], reference: str = "fp32") -> str:
    """variant | forward median / p90 ms | x reference | first call ms | query median ms |
    localized | pose delta median / max (map units, deg); a variant that could not run shows
    its error instead."""
    head = (f"{'variant':<14} | {'forward med / p90 ms':>20} | {'x ' + reference:>8} | "
            f"{'first ms':>8} | {'query med ms':>12} | {'localized':>9} | "
            f"pose delta med / max (m, deg) vs {reference}")
    lines = [head, "-" * len(head)]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['variant']:<14} | not run: {r['error']}")
            continue
        fw, d = r["forward_ms"], r["pose_delta"]
        delta = (f"{_num(d['translation_median'], '.2g')} / {_num(d['translation_max'], '.2g')} m, "
                 f"{_num(d['rotation_median_deg'], '.2g')} / {_num(d['rotation_max_deg'], '.2g')} deg"
                 f" ({d['both']} both)")
        lines.append(f"{r['variant']:<14} | {fw['median']:>9.1f} / {fw['p90']:>8.1f} | "
                     f"{_num(r['speedup'], '.3g'):>7}x | {fw['first_ms']:>8.0f} | "
                     f"{_num(r['query_ms']['median'], '.1f'):>12} | "
                     f"{r['localized']:>4}/{r['queries']:<4} | {delta}")
    return "\n".join(lines)
