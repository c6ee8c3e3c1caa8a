"""Train the NetVLAD layer for retrieval on datasets with known poses (encoder frozen).

    train_retrieval --dataset SET [SET ...] --weights W --out NEW_WEIGHTS.pth [--steps 300]

Each SET is a RobotCar-Seasons-layout folder with the reference model and a
``ground_truth.txt`` of its queries (as ``make_synthetic`` writes). Prints top-1 retrieval
recall (reference within --positive-radius) before and after training.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ros2_s2dhm.datasets import load_dataset, read_image
from ros2_s2dhm.errors import S2DHMError
from ros2_s2dhm.evaluation.submission import read_submission
from ros2_s2dhm.features.checkpoints import load_network, save_network
from ros2_s2dhm.training.retrieval import (PlaceSet, RetrievalConfig, conv5_features,
                                           retrieval_recall, train_netvlad)
from offline_tools.common import add_weights_args, resolve_device, resolve_weights


def parse_args(argv=None):
    doc = __doc__.split("\n")
    p = argparse.ArgumentParser(prog="train_retrieval", description=doc[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc[1:]))
    p.add_argument("--dataset", nargs="+", required=True, type=Path, help="dataset folders")
    p.add_argument("--out", required=True, type=Path, help="weights file to write")
    add_weights_args(p)
    d = RetrievalConfig()
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--margin", type=float, default=d.margin)
    p.add_argument("--positive-radius", type=float, default=d.positive_radius_m, help="metres")
    p.add_argument("--negative-radius", type=float, default=d.negative_radius_m, help="metres")
    p.add_argument("--image-size", type=int, default=d.image_size)
    p.add_argument("--no-data-init", action="store_true", help="keep the current centroids")
    p.add_argument("--half", action="store_true", help="store the weights in float16")
    p.add_argument("--seed", type=int, default=d.seed)
    return p.parse_args(argv)


def place_set(root: Path, network, image_size: int, device) -> PlaceSet:
    dataset = load_dataset(root)
    truth = read_submission(root / "ground_truth.txt")
    queries = [q for q in dataset.queries if q.name in truth]
    return PlaceSet(
        conv5_features(network, [read_image(r.path) for r in dataset.references], image_size, device),
        np.stack([r.pose.center for r in dataset.references]),
        conv5_features(network, [read_image(q.path) for q in queries], image_size, device),
        np.stack([truth[q.name].center for q in queries]))


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    config = RetrievalConfig(args.steps, args.lr, args.margin, args.positive_radius,
                             args.negative_radius, args.image_size, not args.no_data_init, args.seed)
    try:
        device = resolve_device(args.device)
        network, info = load_network(resolve_weights(args.weights), device)
        sets = [place_set(root, network, config.image_size, device) for root in args.dataset]
        before = retrieval_recall(network.netvlad, sets, config.positive_radius_m)
        losses = train_netvlad(network.netvlad, sets, config)
        after = retrieval_recall(network.netvlad, sets, config.positive_radius_m)
        sha = save_network(network, args.out, extra={"retrieval_training": vars(config) | {
            "datasets": [p.name for p in args.dataset], "base_weights": info.kind}}, half=args.half)
    except (S2DHMError, ValueError) as e:
        print(f"train_retrieval: error: {e}", file=sys.stderr)
        return 2
    tail = np.mean(losses[-max(1, len(losses) // 10):])
    print(f"top-1 retrieval recall (within {config.positive_radius_m} m): {100 * before:.1f} % -> "
          f"{100 * after:.1f} %; loss {np.mean(losses[:max(1, len(losses) // 10)]):.4f} -> {tail:.4f}; "
          f"weights {sha[:12]} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
