"""Score image retrieval on real photos of the same places under two conditions.

    retrieval_check --database DIR --queries DIR [--tolerance N] [--weights W]
                    [--image-size 512] [--device cpu|cuda] [--out results.json]
                    [--descriptors-cache FILE.npz] [--no-hubness]

The two folders hold index-aligned sequences (e.g. Gardens Point day / night, SFU dry / jan):
the images of each are sorted by file name and query i shows the place of database images
i-N .. i+N (N = --tolerance, default 2 frames; 0 for place-per-image sets such as SPEDTest).
Every image goes through the network exactly as the localizer sends a query (read as RGB,
``prepare_image`` to --image-size, the NetVLAD global descriptor of the same encoder pass);
:func:`rank_database` then ranks the database for each query the way a map retrieves: a PCA
fitted on the database descriptors (``MapBuildConfig.pca_dim``, whitened), then CSLS hubness reduction
(``--no-hubness``: plain cosine), as ``ros2_s2dhm.retrieval`` does for a map.

Prints and writes (--out) recall@1/5/10 (a query is right when any of its top k lies within
the tolerance) and the hub: the largest share of queries with one and the same top-1 image.
--descriptors-cache FILE.npz keeps the descriptors: a later run with the same folders, weights
and image size reads them instead of running the network (another tolerance, another ranking).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ros2_s2dhm.datasets import read_image
from ros2_s2dhm.errors import DatasetError, S2DHMError
from ros2_s2dhm.evaluation.reliability import hub
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.features.preprocess import prepare_image
from ros2_s2dhm.map_builder import MapBuildConfig
from ros2_s2dhm.localizer import LocalizerConfig
from ros2_s2dhm.retrieval import fit_global_index, rank_references
from offline_tools.common import add_weights_args, resolve_device, resolve_weights

log = logging.getLogger("retrieval_check")
RECALL_KS = (1, 5, 10)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp"}


def list_images(folder: str | Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by file name; DatasetError if none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    paths = sorted((p for p in folder.iterdir()
                    if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES), key=lambda p: p.name)
    if not paths:
        raise DatasetError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths


@torch.no_grad()
def global_descriptors(paths: list[Path], network, image_size: int, device: str) -> np.ndarray:
    """[N, D] float32 NetVLAD descriptors (unit norm, before PCA), one encoder pass per image
    as in ``Localizer.features`` (its ``global_descriptor`` without the hypercolumn)."""
    out = []
    for i, path in enumerate(paths):
        tensor, _ = prepare_image(read_image(path), image_size, device)
        out.append(network.global_descriptor(tensor, autocast_bf16=False)[0].float().cpu().numpy())
        if (i + 1) % 50 == 0:
            log.info("%d / %d images", i + 1, len(paths))
    return np.stack(out).astype(np.float32)


def rank_database(database_descriptors: np.ndarray, query_descriptors: np.ndarray,
                  k: int = max(RECALL_KS), hubness: bool = True) -> np.ndarray:
    """Indices [Q, min(k, N)] of the database images best first for each query, as a map
    retrieves (:func:`ros2_s2dhm.retrieval.rank_references`): PCA (the map builder's
    dimension and whitening) fitted on the database descriptors [N, D], then CSLS
    (``hubness``) or cosine."""
    index = fit_global_index(database_descriptors, MapBuildConfig().pca_dim, MapBuildConfig().pca_whiten)
    return rank_references(index, query_descriptors, k, hubness).astype(np.int64)


def score_rankings(rankings: np.ndarray, tolerance: int, ks=RECALL_KS) -> dict[int, float]:
    """{k: share of queries i with a database index within i +- tolerance among their top k}."""
    rankings = np.asarray(rankings).reshape(len(rankings), -1)
    near = np.abs(rankings - np.arange(len(rankings))[:, None]) <= tolerance
    return {k: float(near[:, :k].any(axis=1).mean()) if len(rankings) else 0.0 for k in ks}


def _cached_descriptors(cache: Path, names: dict, sha256: str, image_size: int):
    """(database, queries) descriptors from ``cache`` when it was written for the same file
    names, weights and image size; None otherwise."""
    if not cache.is_file():
        return None
    with np.load(cache) as data:
        same = (str(data["weights_sha256"]) == sha256 and int(data["image_size"]) == image_size
                and all(list(data[f"{side}_names"]) == names[side] for side in names))
        if same:
            return data["database"], data["queries"]
    log.warning("%s was written for other images, weights or image size: recomputing", cache)
    return None


def _descriptors(args, paths: dict, network, sha256: str, device: str):
    """(database, queries, read_from_cache) for the two folders."""
    names = {side: [p.name for p in paths[side]] for side in paths}
    cache = Path(args.descriptors_cache) if args.descriptors_cache else None
    cached = _cached_descriptors(cache, names, sha256, args.image_size) if cache else None
    if cached is not None:
        return cached[0], cached[1], True
    database, queries = (global_descriptors(paths[side], network, args.image_size, device)
                         for side in ("database", "queries"))
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, database=database, queries=queries, weights_sha256=sha256,
                 image_size=args.image_size, database_names=names["database"],
                 queries_names=names["queries"])
    return database, queries, False


def run(args, device: str) -> int:
    paths = {"database": list_images(args.database), "queries": list_images(args.queries)}
    if len(paths["database"]) != len(paths["queries"]):
        raise DatasetError(
            f"{len(paths['database'])} database images but {len(paths['queries'])} queries: the "
            "folders must be index-aligned (image i of one shows the place of image i of the other)")
    network, info = load_network(resolve_weights(args.weights), device=device)
    t0 = time.perf_counter()
    database, queries, cached = _descriptors(args, paths, network, info.sha256, device)
    t1 = time.perf_counter()
    rankings = rank_database(database, queries, hubness=args.hubness)
    recall = score_rankings(rankings, args.tolerance)
    top1 = hub([paths["database"][r[0]].name if len(r) else None for r in rankings])
    results = {
        "database": str(args.database), "queries": str(args.queries),
        "images": len(queries), "tolerance": args.tolerance, "image_size": args.image_size,
        "hubness": args.hubness,
        "weights": {"kind": info.kind, "path": info.path, "sha256": info.sha256},
        **{f"recall@{k}": v for k, v in recall.items()},
        "hub": {"image": top1["reference"], "queries": top1["queries"],
                "share": top1["share"] / 100.0},
        "descriptors_cached": cached,
        "seconds": {"descriptors": round(t1 - t0, 2),
                    "ranking": round(time.perf_counter() - t1, 2)},
        "rankings": rankings.tolist(),
    }
    print(f"{len(queries)} queries against {len(database)} database images, tolerance "
          f"{args.tolerance}, weights {info.kind} ({info.sha256[:12]}), {args.image_size} px")
    print("  ".join(f"recall@{k} {v:.3f}" for k, v in recall.items())
          + f"  hub {results['hub']['share']:.3f} ({top1['reference']}, {top1['queries']} queries)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="retrieval_check", description=__doc__.split("\n")[0])
    p.add_argument("--database", required=True, help="folder of database images (e.g. day)")
    p.add_argument("--queries", required=True, help="folder of query images (e.g. night), "
                   "index-aligned with --database")
    p.add_argument("--tolerance", type=int, default=2,
                   help="query i is right on database images i-N..i+N (default %(default)s)")
    p.add_argument("--image-size", type=int, default=MapBuildConfig().image_size,
                   help="longer image side fed to the network (default %(default)s)")
    p.add_argument("--out", help="write the scores and rankings to this json file")
    p.add_argument("--descriptors-cache", help="npz file to read the descriptors from, or to "
                   "write them to when it is missing or was made for other images or weights")
    p.add_argument("--hubness", action=argparse.BooleanOptionalAction,
                   default=LocalizerConfig().retrieval_hubness,
                   help="rank by CSLS as the localizer's retrieval_hubness does (default %(default)s)")
    add_weights_args(p)
    args = p.parse_args(argv)
    if args.tolerance < 0 or args.image_size < 1:
        p.error("--tolerance must be >= 0 and --image-size >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args, resolve_device(args.device))
    except (S2DHMError, ValueError) as err:
        print(f"retrieval_check: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
