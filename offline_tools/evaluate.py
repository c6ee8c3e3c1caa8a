"""Localize every query of a dataset against a reference map; write submissions and scores.

    evaluate --dataset DIR --map MAP --out OUT [--ground-truth FILE] [--conditions a,b]
             [--device cpu|cuda] [--weights W] [--top-k K] [--limit N] [--local-validation]

Writes to OUT:
  submission_rpnp.txt, submission_fpnp.txt  visuallocalization.net format, one file per
      method with every localized query; a failed query is absent (the service counts
      an absent query as not localized) and never gets a placeholder pose;
  queries.csv   every query, failed ones included with their failure reason;
  timing.json   per-stage median and p90 milliseconds;
and with ground truth (``--ground-truth``, or the reference poses in local validation):
  results.json  recall at the --thresholds (default (0.05 m, 0.5°), (0.25 m, 2°), (0.5 m, 5°),
      (5 m, 10°)) per condition and over all queries (failures count as misses), median
      errors (failures count as infinite; null when half or more failed), failures and false
      poses (returned with error > 5 m or 10°) per condition, retrieval accuracy (top-1 /
      top-k within 5 m and 30°) per condition, the confidence's precision-recall curve and
      its operating point at the localizer's min_confidence, weights, timing medians;
  results.txt   the printed tables;  plots/cumulative_<condition>.png, plots/confidence_pr.png.

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
from ros2_s2dhm.evaluation.recall import REPORT_THRESHOLDS, evaluate_recall
from ros2_s2dhm.evaluation.reliability import (confidence_curve, operating_point,
                                               plot_confidence_curve, retrieval_accuracy)
from ros2_s2dhm.evaluation.run import (evaluate_queries, failure_counts, outcome_conditions,
                                       outcome_estimates, reference_queries,
                                       select_queries, write_outcomes_csv)
from ros2_s2dhm.evaluation.submission import read_submission, write_submission
from ros2_s2dhm.runtime import build_localizer
from offline_tools.common import add_localizer_args, add_weights_args, localizer_options, resolve_device

log = logging.getLogger("evaluate")
DEFAULT_THRESHOLDS = REPORT_THRESHOLDS


def parse_threshold(text: str) -> tuple[float, float]:
    """'0.25,2' -> (0.25, 2.0); both positive."""
    try:
        t, r = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold {text!r}: expected METRES,DEGREES such as 0.25,2") from None
    if not (t > 0 and r > 0):
        raise argparse.ArgumentTypeError(f"threshold {text!r}: both values must be > 0")
    return t, r


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
    p.add_argument("--thresholds", nargs="+", type=parse_threshold, default=list(DEFAULT_THRESHOLDS),
                   metavar="M,DEG", help="recall thresholds as distance,degrees, the distance in the map's unit (metres unless its dataset says otherwise; default "
                   + " ".join(f"{t:g},{r:g}" for t, r in DEFAULT_THRESHOLDS) + ")")
    p.add_argument("--limit", type=int, default=None, help="at most N queries per condition")
    p.add_argument("--local-validation", action="store_true",
                   help="use the reference images as queries, excluding the identical image")
    p.add_argument("--no-plots", action="store_true", help="skip the cumulative error plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def run(args: argparse.Namespace, device: str) -> int:
    dataset = load_dataset(args.dataset, None if args.local_validation else args.conditions)
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
    log.info("%d queries, map %s (%d images), weights: %s, device %s", len(queries), args.map,
             len(reference_map), weights_text, device)

    outcomes = evaluate_queries(localizer, queries, read_image, exclude_self=args.local_validation,
                                progress=not args.quiet)

    out = args.out
    estimates = outcome_estimates(outcomes)
    for method, entries in estimates.items():
        write_submission(out / f"submission_{method}.txt", entries)
    timings = rep.summarize_timings([o.timings_ms for o in outcomes])
    rep.write_json(out / "timing.json", {"device": device, "weights": weights_text, "stages": timings})
    report = None
    tables = []
    if ground_truth is not None:
        report = evaluate_recall(outcome_conditions(outcomes), estimates, ground_truth, args.thresholds)
        results = rep.results_dict(report, weights_text, rep.timing_medians([o.timings_ms for o in outcomes]))
        min_confidence = localizer.config.min_confidence
        curve = confidence_curve(outcomes, ground_truth)
        references = {n: reference_map.pose(i) for i, n in enumerate(reference_map.names)}
        retrieval = retrieval_accuracy(outcomes, ground_truth, references)
        results["unit"] = reference_map.unit
        results["retrieval"] = {"top_k": localizer.config.top_k, "tolerance": [5.0, 30.0],
                                "conditions": retrieval}
        results["confidence"] = {"min_confidence": min_confidence,
                                 "operating_point": operating_point(curve, min_confidence),
                                 "curve": curve}
        rep.write_json(out / "results.json", results)
        unit = reference_map.unit  # thresholds and distances are in the map's unit
        tables = [rep.format_recall_table(report, unit),
                  rep.format_retrieval_table(retrieval, localizer.config.top_k),
                  rep.format_operating_point(operating_point(curve, min_confidence), min_confidence,
                                             len(outcomes), unit)]
        (out / "results.txt").write_text(f"weights: {weights_text}\n" + "\n\n".join(tables) + "\n")
        if not args.no_plots:
            plot_all_conditions(report, out / "plots")
            plot_confidence_curve(curve, out / "plots" / "confidence_pr.png", min_confidence)
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
