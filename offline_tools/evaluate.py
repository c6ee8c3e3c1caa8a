"""Localize every query of a dataset against a reference map; write submissions and scores.

    evaluate --dataset DIR --map MAP --out OUT [--ground-truth FILE] [--conditions a,b]
             [--device cpu|cuda] [--weights W] [--top-k K] [--limit N] [--local-validation]
             [--thresholds M,DEG ...] [--false-pose M,DEG] [--correct-pose M,DEG]
             [--retrieval-distance D]

Writes to OUT:
  submission_rpnp.txt, submission_fpnp.txt  visuallocalization.net format, one file per
      method with every localized query; a failed query is absent (the service counts
      an absent query as not localized) and never gets a placeholder pose;
  retrieval_pairs.txt  hloc's pairs format: one 'query_name reference_name' line per
      retrieved reference, each query's top-k in rank order, failed queries included (a query
      whose image was refused before retrieval has none); names as in the submissions and map;
  queries.csv   every query, failed ones included with their failure reason;
  timing.json   per-stage median and p90 milliseconds;
and with ground truth (``--ground-truth``, or the reference poses in local validation):
  results.json  recall at the --thresholds (default (0.05, 0.5°), (0.25, 2°), (0.5, 5°),
      (5, 10°)) per condition and over all queries (failures count as misses), median
      errors (failures count as infinite; null when half or more failed), failures and false
      poses (returned beyond --false-pose, default (5, 10°)) per condition; retrieval per
      condition: top-1 / top-k share of queries whose reference shows the right place (camera
      centre within --retrieval-distance, default 5, and rotation within 30° of the query's
      true pose) and the hub (the largest share of a condition's queries with one and the same
      top-1 reference, and its name); the confidence's precision-recall curve (correct within
      --correct-pose, default (0.25, 2°); false beyond --false-pose) and its operating point at
      the localizer's min_confidence; the map's unit, weights, timing medians;
  results.txt   the printed tables;  plots/cumulative_<condition>.png, plots/confidence_pr.png.

Every distance (thresholds, --false-pose, --correct-pose, --retrieval-distance) is in the map's
unit: metres unless its dataset says otherwise (an SfM model without scale, e.g. ``sfm``);
for such a map the run warns once and lists the bounds it used.

``--local-validation``: the reference images are the queries (the paper's local
validation); the identical map image is excluded from retrieval and the reference poses
are the ground truth. ``--limit N`` keeps at most N queries per condition, spread over it.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ros2_s2dhm.datasets import load_dataset, read_image
from ros2_s2dhm.errors import DatasetError, S2DHMError
from ros2_s2dhm.evaluation import report as rep
from ros2_s2dhm.evaluation.plots import plot_all_conditions
from ros2_s2dhm.evaluation.recall import Bounds
from ros2_s2dhm.evaluation.reliability import plot_confidence_curve
from ros2_s2dhm.evaluation.run import (evaluate_queries, failure_counts, outcome_estimates,
                                       reference_queries, select_queries, write_outcomes_csv,
                                       write_retrieval_pairs)
from ros2_s2dhm.datasets.submission import read_submission, write_submission
from ros2_s2dhm.runtime import build_localizer
from offline_tools.common import add_localizer_args, add_weights_args, localizer_options, resolve_device

log = logging.getLogger("evaluate")
DEFAULTS = Bounds()  # the one default of every bound (ros2_s2dhm.evaluation.recall)


def parse_threshold(text: str) -> tuple[float, float]:
    """'0.25,2' -> (0.25, 2.0): a distance (map units) and degrees, both positive."""
    try:
        t, r = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold {text!r}: expected DISTANCE,DEGREES such as "
                                         "0.25,2 (the distance in the map's unit)") from None
    if not (t > 0 and r > 0):
        raise argparse.ArgumentTypeError(f"threshold {text!r}: both values must be > 0")
    return t, r


def parse_distance(text: str) -> float:
    """'5' -> 5.0: a positive distance in the map's unit."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"distance {text!r}: expected a number such as 5 "
                                         "(in the map's unit)") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"distance {text!r}: must be > 0")
    return value


def _pair(bound: tuple[float, float]) -> str:
    return f"{bound[0]:g},{bound[1]:g}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="evaluate", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("--dataset", required=True, type=Path,
                   help="dataset root (RobotCar Seasons layout with images/, or a CMU slice)")
    p.add_argument("--map", required=True, type=Path, help="reference map directory (build_map)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--ground-truth", type=Path,
                   help="query poses, same format as a submission (name qw qx qy qz tx ty tz)")
    p.add_argument("--conditions", type=lambda s: [c for c in s.split(",") if c],
                   help="comma-separated query conditions (folders under images/); default all")
    add_weights_args(p)  # --weights (must be those the map was built with), --device
    add_localizer_args(p)
    p.add_argument("--thresholds", nargs="+", type=parse_threshold,
                   default=list(DEFAULTS.thresholds), metavar="M,DEG",
                   help="recall thresholds as distance,degrees, the distance in the map's unit "
                        "(metres unless its dataset says otherwise; default "
                        + " ".join(_pair(b) for b in DEFAULTS.thresholds) + ")")
    p.add_argument("--false-pose", type=parse_threshold, default=DEFAULTS.false_pose,
                   metavar="M,DEG", help="a returned pose beyond this distance (map units) or "
                   f"angle is false (default {_pair(DEFAULTS.false_pose)})")
    p.add_argument("--correct-pose", type=parse_threshold, default=DEFAULTS.correct,
                   metavar="M,DEG", help="a pose within this distance (map units) and angle is "
                   "correct on the confidence curve and at its operating point (default "
                   f"{_pair(DEFAULTS.correct)})")
    p.add_argument("--retrieval-distance", type=parse_distance,
                   default=DEFAULTS.retrieval_distance, metavar="D",
                   help="a retrieved reference whose camera centre is within D (map units) and "
                   f"{DEFAULTS.retrieval_max_angle_deg:g}° of the query's true pose shows the "
                   f"right place (default {DEFAULTS.retrieval_distance:g})")
    p.add_argument("--limit", type=int, default=None, help="at most N queries per condition")
    p.add_argument("--local-validation", action="store_true",
                   help="use the reference images as queries, excluding the identical image")
    p.add_argument("--no-plots", action="store_true", help="skip the cumulative error plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def bounds_from_args(args: argparse.Namespace, unit: str) -> Bounds:
    """The evaluation's bounds from the flags, distances in the map's ``unit``."""
    return Bounds(thresholds=tuple(args.thresholds), false_pose=tuple(args.false_pose),
                  correct=tuple(args.correct_pose), retrieval_distance=args.retrieval_distance,
                  retrieval_max_angle_deg=DEFAULTS.retrieval_max_angle_deg, unit=unit)


def warn_unit(bounds: Bounds) -> None:
    """The one warning of a run about a map whose unit is not metres (nothing for ``m``)."""
    if bounds.unit == "m":
        return
    log.warning("map unit %r: every distance is in it, the evaluation's (%s; set --thresholds, "
                "--false-pose, --correct-pose and --retrieval-distance for the model's scale) "
                "and the localizer's (--max-reference-distance-m, "
                "--verification-agree-translation, --refine-max-shift)", bounds.unit,
                bounds.describe())


def run(args: argparse.Namespace, device: str) -> int:
    dataset = load_dataset(args.dataset, None if args.local_validation else args.conditions,
                           warn_unit=False)  # warn_unit below, with the map's unit and bounds
    if args.local_validation:
        queries, ground_truth = reference_queries(dataset)
        if args.ground_truth:
            log.warning("--ground-truth is ignored in local validation (reference poses are used)")
    else:
        queries = dataset.queries
        ground_truth = read_submission(args.ground_truth) if args.ground_truth else None
    queries = select_queries(queries, args.conditions, args.limit)
    if not queries:
        raise DatasetError(f"{args.dataset}: no queries to localize")
    if ground_truth is not None:  # fail before hours of localization, not after
        missing = [q.name for q in queries if q.name not in ground_truth]
        if missing:
            raise DatasetError(f"{args.ground_truth}: no pose for {len(missing)} of {len(queries)} "
                               f"queries (e.g. {', '.join(missing[:3])})")

    localizer, weights = build_localizer(args.map, args.weights, device, **localizer_options(args))
    weights_text = rep.describe_weights(weights)
    reference_map = localizer.map
    bounds = bounds_from_args(args, reference_map.unit)  # distances are in the map's unit
    warn_unit(bounds)
    log.info("%d queries, map %s (%d images), weights: %s, device %s", len(queries), args.map,
             len(reference_map), weights_text, device)

    outcomes = evaluate_queries(localizer, queries, read_image, exclude_self=args.local_validation,
                                progress=not args.quiet)

    out = args.out
    estimates = outcome_estimates(outcomes)
    for method, entries in estimates.items():
        write_submission(out / f"submission_{method}.txt", entries)
    write_retrieval_pairs(out / "retrieval_pairs.txt", outcomes)
    timings = rep.summarize_timings([o.timings_ms for o in outcomes])
    rep.write_json(out / "timing.json", {"device": device, "weights": weights_text, "stages": timings})
    report = None
    tables = []
    if ground_truth is not None:
        min_confidence = localizer.config.min_confidence
        references = {n: reference_map.pose(i) for i, n in enumerate(reference_map.names)}
        scores = rep.score_outcomes(outcomes, ground_truth, references, bounds,
                                    top_k=localizer.config.top_k, min_confidence=min_confidence,
                                    weights=weights_text,
                                    timing_ms=rep.timing_medians([o.timings_ms for o in outcomes]))
        report, tables = scores.report, scores.tables
        rep.write_json(out / "results.json", scores.results)
        (out / "results.txt").write_text(f"weights: {weights_text}\n" + "\n\n".join(tables) + "\n")
        if not args.no_plots:
            plot_all_conditions(report, out / "plots", bounds.unit)
            plot_confidence_curve(scores.curve, out / "plots" / "confidence_pr.png", min_confidence,
                                  bounds.correct, bounds.unit)
    write_outcomes_csv(out / "queries.csv", outcomes, report)

    failed = failure_counts(outcomes)
    print(f"\n{len(outcomes)} queries, {len(outcomes) - sum(failed.values())} localized; "
          f"weights: {weights_text}")
    for reason, count in failed.items():
        print(f"  failed ({count}): {reason}")
    print("\n" + rep.format_timing_table({device: timings}))
    for table in tables:
        print("\n" + table)
    if weights.random:
        print("\nWARNING: random network weights; these numbers do not measure the method.")
    print(f"\nwritten to {out}/")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 2
    try:
        return run(args, device)
    except S2DHMError as err:
        print(f"evaluate: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
