"""Train the NetVLAD layer for retrieval on datasets with known poses (encoder frozen).

    train_retrieval --dataset SET [SET ...] --out NEW_WEIGHTS.pth [--weights default]
                    [--sequence DATABASE QUERIES ...] [--validate SET ...] [--steps 3000]
                    [--cache DIR]

Each SET is a dataset folder with the reference model and a ``ground_truth.txt`` of its
queries (as ``make_synthetic`` writes). ``--sequence DATABASE QUERIES`` (repeatable) adds real
photos without poses: two index-aligned image folders in ``retrieval_check``'s layout (sorted by
file name, image i of each shows place i), whose frame i is placed at ``i * --frame-spacing``
along a line, so the radii count frames there (default spacing 1: positives within 3 frames,
negatives beyond 10; a place-per-image set such as SPEDTest takes a spacing above the negative
radius, so only image i is a positive). Keep the places you evaluate on out of these folders.
conv5_3 of every image is computed once (and kept in ``--cache DIR`` for the next run); only
the NetVLAD layer is trained, so the hypercolumns and every map's matching descriptors stay as
they were (a map still has to be rebuilt: it records the weights). ``--train-conv5-3`` trains
conv5_3 with it (at ``--conv5-3-lr``), from cached relu5_2: the hypercolumn taps stop before
conv5_3, so matching is still unchanged. Prints, per condition of the ``--validate`` sets (held
out from training; default: the training sets), the share of queries whose top-1 / top-10
reference lies within ``--retrieval-distance`` and the largest share on one top-1 reference,
before and after, ranked as the localizer ranks (the map's whitened PCA, CSLS hubness
reduction).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import sys
from pathlib import Path

import numpy as np
import torch

from ros2_s2dhm.datasets import load_dataset, read_image
from ros2_s2dhm.errors import DatasetError, S2DHMError
from ros2_s2dhm.evaluation.recall import RETRIEVAL_DISTANCE
from ros2_s2dhm.evaluation.reliability import hub
from ros2_s2dhm.datasets.submission import read_submission
from ros2_s2dhm.features.checkpoints import load_network, save_network
from ros2_s2dhm.map_builder import MapBuildConfig
from ros2_s2dhm.retrieval import fit_global_index, rank_references
from ros2_s2dhm.training.retrieval import (PlaceSet, RetrievalConfig, conv5_features, describe,
                                           global_head, train_netvlad)
from offline_tools.retrieval_check import list_images
from offline_tools.common import (add_config_args, add_weights_args, config_from_args,
                                  resolve_device, resolve_weights)

log = logging.getLogger("train_retrieval")
TOP_K = 10


def parse_args(argv=None):
    doc = __doc__.split("\n")
    p = argparse.ArgumentParser(prog="train_retrieval", description=doc[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc[1:]))
    p.add_argument("--dataset", nargs="+", default=[], type=Path, help="training dataset folders")
    p.add_argument("--sequence", nargs=2, action="append", default=[], type=Path,
                   metavar=("DATABASE", "QUERIES"),
                   help="two index-aligned image folders of the same places (repeatable)")
    p.add_argument("--validate-sequence", nargs=2, action="append", default=[], type=Path,
                   metavar=("DATABASE", "QUERIES"),
                   help="held-out image folders scored like --validate (repeatable)")
    p.add_argument("--frame-spacing", type=float, nargs="+", default=[1.0],
                   help="distance between consecutive --sequence frames in the radii's unit: one "
                        "value for every sequence, or one per --sequence then --validate-sequence "
                        "in order (default %(default)s)")
    p.add_argument("--validate", nargs="+", type=Path, default=None,
                   help="held-out dataset folders scored before and after (default: the training sets)")
    p.add_argument("--out", required=True, type=Path, help="weights file to write")
    p.add_argument("--cache", type=Path, default=None,
                   help="folder for the conv5_3 features (relu5_2 with --train-conv5-3)")
    add_weights_args(p)
    add_config_args(p, RetrievalConfig, "training hyperparameters (defaults: RetrievalConfig's)")
    p.add_argument("--retrieval-distance", type=float, default=RETRIEVAL_DISTANCE,
                   help="a retrieved reference within this distance shows the right place "
                        "(default %(default)s)")
    p.add_argument("--half", action="store_true", help="store the weights in float16")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not args.dataset and not args.sequence:
        p.error("give training data: --dataset SET ... and/or --sequence DATABASE QUERIES")
    pairs = len(args.sequence) + len(args.validate_sequence)
    if min(args.frame_spacing) <= 0 or len(args.frame_spacing) not in (1, pairs):
        p.error(f"--frame-spacing takes one value > 0 or one per sequence ({pairs}), got "
                f"{args.frame_spacing}")
    if len(args.frame_spacing) == 1:
        args.frame_spacing = args.frame_spacing * pairs
    return args


def _cached(cache: Path | None, name: str, sources: str, info, image_size: int,
            before_conv5_3: bool, compute) -> PlaceSet:
    """``compute()``'s PlaceSet fields, kept in ``cache`` under a key of the sources, weights,
    image size and layer."""
    layer = "relu5_2" if before_conv5_3 else "conv5_3"
    key = hashlib.sha256(f"{sources}|{info.sha256}|{image_size}|{layer}".encode()).hexdigest()[:16]
    path = cache / f"{name}-{key}.pt" if cache else None
    if path is not None and path.is_file():
        return PlaceSet(**torch.load(path, weights_only=False))
    fields = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(fields, path)
    return PlaceSet(**fields)


def place_set(root: Path, network, info, image_size: int, device, cache: Path | None,
              before_conv5_3: bool = False) -> PlaceSet:
    """The conv5_3 maps (``before_conv5_3``: relu5_2), centres and conditions of a dataset's
    references and queries."""
    return _cached(cache, root.name, str(root.resolve()), info, image_size, before_conv5_3,
                   lambda: _dataset_fields(root, network, image_size, device, before_conv5_3))


def sequence_set(database: Path, queries: Path, spacing: float, network, info, image_size: int,
                 device, cache: Path | None, before_conv5_3: bool = False) -> PlaceSet:
    """The maps of two index-aligned image folders (``retrieval_check``'s layout): database
    images as references, the other folder's as queries (condition: its folder name), frame i
    of either at (i * spacing, 0, 0)."""
    paths = [list_images(database), list_images(queries)]
    if len(paths[0]) != len(paths[1]):
        raise DatasetError(f"{database} has {len(paths[0])} images but {queries} {len(paths[1])}: "
                           "--sequence folders must be index-aligned")

    def compute():
        centers = np.stack([np.arange(len(paths[0])) * spacing, *[np.zeros(len(paths[0]))] * 2], 1)
        maps = [conv5_features(network, [read_image(p) for p in side], image_size, device,
                               before_conv5_3) for side in paths]
        return dict(reference_features=maps[0], reference_centers=centers, query_features=maps[1],
                    query_centers=centers.copy(),
                    query_conditions=np.array([queries.name] * len(paths[1])))

    sources = "|".join(str(p.resolve()) for side in paths for p in side) + f"|{spacing}"
    return _cached(cache, f"{database.name}-{queries.name}", sources, info, image_size,
                   before_conv5_3, compute)


def _dataset_fields(root: Path, network, image_size: int, device, before_conv5_3: bool) -> dict:
    dataset = load_dataset(root)
    truth = read_submission(root / "ground_truth.txt")
    queries = [q for q in dataset.queries if q.name in truth]
    if not queries:
        raise S2DHMError(f"{root / 'ground_truth.txt'}: no pose for any query of {root}")
    fields = dict(
        reference_features=conv5_features(network, [read_image(r.path) for r in dataset.references],
                                          image_size, device, before_conv5_3),
        reference_centers=np.stack([r.pose.center for r in dataset.references]),
        query_features=conv5_features(network, [read_image(q.path) for q in queries], image_size,
                                      device, before_conv5_3),
        query_centers=np.stack([truth[q.name].center for q in queries]),
        query_conditions=np.array([q.condition for q in queries]))
    return fields


def retrieval_table(netvlad, sets: list[PlaceSet], distance: float) -> dict[str, tuple[float, float, float]]:
    """Per condition and 'all': (top-1 share, top-10 share, largest share on one top-1) in %;
    ``netvlad``: what reads the sets' maps (a NetVLAD layer or a GlobalHead)."""
    rows: dict[str, list] = {}
    for s in sets:
        index = fit_global_index(describe(netvlad, s.reference_features), MapBuildConfig.pca_dim,
                                 MapBuildConfig.pca_whiten)
        ranks = rank_references(index, describe(netvlad, s.query_features), TOP_K)
        dist = np.linalg.norm(s.reference_centers[ranks] - s.query_centers[:, None], axis=2)
        for c in np.unique(s.query_conditions):
            m = s.query_conditions == c
            rows.setdefault(str(c), []).append((dist[m, 0] <= distance, (dist[m] <= distance).any(1),
                                                hub(ranks[m, 0].tolist())["share"]))
    table = {}
    for c, parts in sorted(rows.items()) + [("all", [p for v in rows.values() for p in v])]:
        top1, topk = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        table[c] = (100 * top1.mean(), 100 * topk.mean(), max(p[2] for p in parts))
    return table


def format_tables(before: dict, after: dict) -> str:
    lines = [f"{'condition':<18} top-1 before -> after   top-{TOP_K} before -> after   hub before -> after"]
    for c in before:
        b, a = before[c], after[c]
        lines.append(f"{c:<18} {b[0]:5.1f} -> {a[0]:5.1f} %       {b[1]:5.1f} -> {a[1]:5.1f} %"
                     f"        {b[2]:5.1f} -> {a[2]:5.1f} %")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = config_from_args(RetrievalConfig, args)
    except S2DHMError as exc:
        log.error("%s", exc)
        return 2
    try:
        device = resolve_device(args.device)
        network, info = load_network(resolve_weights(args.weights), device)
        network.eval()
        def place_sets(roots, pairs, spacings) -> list[PlaceSet]:
            common = (network, info, config.image_size, device, args.cache, config.train_conv5_3)
            return ([place_set(root, *common) for root in roots]
                    + [sequence_set(d, q, spacing, *common) for (d, q), spacing in zip(pairs, spacings)])

        n_train = len(args.sequence)
        sets = place_sets(args.dataset, args.sequence, args.frame_spacing[:n_train])
        held_out = place_sets(args.validate or [], args.validate_sequence,
                              args.frame_spacing[n_train:]) or sets
        head = global_head(network, config)
        before = retrieval_table(head, held_out, args.retrieval_distance)
        losses = train_netvlad(head, sets, config, progress=not args.no_progress)
        after = retrieval_table(head, held_out, args.retrieval_distance)
        sha = save_network(network, args.out, extra={"retrieval_training": {
            **dataclasses.asdict(config), "datasets": [p.name for p in args.dataset],
            "sequences": [[d.name, q.name] for d, q in args.sequence],
            "validation": [p.name for p in args.validate or []]
            + [f"{d.name}-{q.name}" for d, q in args.validate_sequence], "base_weights": info.kind,
            "base_sha256": info.sha256}}, half=args.half)
    except (S2DHMError, ValueError) as e:
        print(f"train_retrieval: error: {e}", file=sys.stderr)
        return 2
    n = max(1, len(losses) // 10)
    print(f"{'held-out' if held_out is not sets else 'training'} sets, right place within "
          f"{args.retrieval_distance:g}:\n{format_tables(before, after)}")
    print(f"loss {np.mean(losses[:n]):.4f} -> {np.mean(losses[-n:]):.4f} over {len(losses)} steps; "
          f"weights {sha[:12]} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
