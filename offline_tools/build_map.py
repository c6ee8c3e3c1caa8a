"""Build a reference map from a dataset: `build_map --dataset DIR --out MAP [--weights W]`."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys

from ros2_s2dhm.datasets import FORMATS, load_dataset
from ros2_s2dhm.errors import S2DHMError
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.map_builder import MapBuildConfig, build_reference_map
from offline_tools.common import add_weights_args, resolve_device, resolve_weights


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", required=True,
                   help="dataset root: a COLMAP layout (sparse/ + images/), RobotCar Seasons or "
                        "a CMU slice")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="dataset layout (default: chosen by what the folder holds)")
    p.add_argument("--unit", default=None,
                   help="unit of length of the dataset's poses (default: the dataset's, 'm' unless "
                        "its unit.txt says otherwise); distances and thresholds use it")
    p.add_argument("--out", required=True, help="map directory to write")
    add_weights_args(p)
    p.add_argument("--image-size", type=int, default=MapBuildConfig.image_size,
                   help="longer image side fed to the network (default %(default)s)")
    p.add_argument("--max-keypoints", type=int, default=MapBuildConfig.max_keypoints,
                   help="keypoints kept per reference image (default %(default)s)")
    p.add_argument("--grid", type=int, default=MapBuildConfig.grid,
                   help="cells per side for the spatial keypoint round-robin (default %(default)s)")
    p.add_argument("--pca-dim", type=int, default=MapBuildConfig.pca_dim,
                   help="global descriptor dimension after PCA (default %(default)s)")
    p.add_argument("--descriptor-dim", type=int, default=MapBuildConfig.descriptor_dim,
                   help="matching-descriptor dimension: PCA of the reference hypercolumns, stored "
                        "as int8 (default %(default)s)")
    p.add_argument("--whiten-descriptors", action="store_true",
                   help="whiten the matching-descriptor PCA (default: not whitened)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        device = resolve_device(args.device)
        dataset = load_dataset(args.dataset, format=args.format)
        if args.unit is not None:
            dataset = dataclasses.replace(dataset, unit=args.unit)
        network, info = load_network(resolve_weights(args.weights), device)
        config = MapBuildConfig(image_size=args.image_size, max_keypoints=args.max_keypoints,
                                grid=args.grid, pca_dim=args.pca_dim,
                                descriptor_dim=args.descriptor_dim,
                                descriptor_whiten=args.whiten_descriptors)
        ref_map = build_reference_map(dataset, network, info.sha256, info.kind, args.out,
                                      config, device)
    except S2DHMError as e:
        print(f"build_map: error: {e}", file=sys.stderr)
        return 2
    size = sum(f.stat().st_size for f in ref_map.directory.iterdir() if f.is_file())
    print(f"map with {len(ref_map)} reference images, {ref_map.num_keypoints} keypoints max "
          f"per image, {ref_map.descriptor_dim}-d int8 descriptors, "
          f"{size / max(1, len(ref_map)) / 1e6:.2f} MB per image, weights {info.kind} "
          f"{info.sha256[:12]}, unit {ref_map.unit} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
