"""Build a reference map from a dataset or from a recorded drive with known poses.

    build_map --dataset DIR --out MAP [--weights W]
    build_map --bag BAG --image-topic T --poses POSES.txt [--camera "MODEL W H params..."]
              --site SITE --out MAP
    build_map --images FOLDER --poses POSES.txt --camera "MODEL W H params..." --site SITE --out MAP

``--dataset``: a COLMAP layout (sparse/ + images/), RobotCar Seasons or a CMU slice. From a
drive: the frames (a rosbag2 image topic, or a folder of ``<timestamp_us>.jpg/png``) are
paired with the poses (TUM ``timestamp tx ty tz qx qy qz qw`` by stamp, or the project's
``name qw qx qy qz tx ty tz`` by name; ``--pose-convention`` says which way they map), the
camera comes from ``--camera`` or the bag's CameraInfo, 3D points are triangulated with the
poses fixed (pycolmap: SIFT, sequential matching, triangulate_points) into ``--site`` (a COLMAP
layout), and the map is built from it.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from ros2_s2dhm.datasets import FORMATS, load_dataset
from ros2_s2dhm.drive_map import CONVENTIONS, MATCHERS
from ros2_s2dhm.errors import S2DHMError
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.map_builder import MapBuildConfig, build_reference_map
from offline_tools.common import (add_config_args, add_weights_args, config_from_args,
                                  resolve_device, resolve_weights)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset",
                   help="dataset root: a COLMAP layout (sparse/ + images/), RobotCar Seasons or "
                        "a CMU slice")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="dataset layout (default: chosen by what the folder holds)")
    p.add_argument("--unit", default=None,
                   help="unit of length of the dataset's poses (default: the dataset's, 'm' unless "
                        "its unit.txt says otherwise); distances and thresholds use it")
    p.add_argument("--out", required=True, help="map directory to write")
    add_weights_args(p)
    add_config_args(p, MapBuildConfig, "map options (defaults: MapBuildConfig's)")
    g = p.add_argument_group("from a recorded drive (instead of --dataset)")
    g.add_argument("--bag", type=Path, help="rosbag2 with the drive's images")
    g.add_argument("--image-topic", default="/camera/image/compressed",
                   help="image topic in --bag (default %(default)s)")
    g.add_argument("--camera-info-topic", default="/camera/camera_info",
                   help="CameraInfo topic in --bag, used when --camera is not given")
    g.add_argument("--images", type=Path, help="folder of <timestamp_us>.jpg/.png frames (instead of --bag)")
    g.add_argument("--poses", type=Path, help="pose file of the frames")
    g.add_argument("--pose-format", choices=("tum", "names"), default="tum",
                   help="tum: 'timestamp tx ty tz qx qy qz qw' matched by stamp; names: "
                        "'name qw qx qy qz tx ty tz' (a submission file) (default tum)")
    g.add_argument("--pose-convention", choices=CONVENTIONS, default="camera-to-world",
                   help="the poses map camera to world (SLAM, TUM) or world to camera "
                        "(default camera-to-world)")
    g.add_argument("--camera", help="'MODEL WIDTH HEIGHT params...' (COLMAP), e.g. 'PINHOLE 640 "
                                    "480 500 500 320 240'; default: the bag's CameraInfo")
    g.add_argument("--max-time-diff", type=float, default=0.02,
                   help="seconds between a frame and its TUM pose at most (default 0.02)")
    g.add_argument("--every", type=int, default=1, help="keep every N-th frame (default 1)")
    g.add_argument("--matcher", choices=MATCHERS, default="sequential")
    g.add_argument("--overlap", type=int, default=10,
                   help="sequential matching: each frame with its N successors (default 10)")
    g.add_argument("--site", type=Path, help="where the COLMAP layout of the drive is written")
    args = p.parse_args(argv)
    if (args.dataset is None) == (args.poses is None):
        p.error("give --dataset, or --poses with --bag or --images (a recorded drive)")
    if args.poses is not None and ((args.bag is None) == (args.images is None) or args.site is None):
        p.error("a recorded drive needs --poses, one of --bag or --images, and --site")
    return args


def site_from_drive(args) -> Path:
    """The COLMAP layout of the drive given by the flags (triangulated with fixed poses)."""
    from ros2_s2dhm.drive_map import (  # noqa: PLC0415
        Frame,
        poses_for_frames,
        read_camera_line,
        read_tum_poses,
        triangulate_site,
    )
    from ros2_s2dhm.datasets.submission import read_submission  # noqa: PLC0415

    camera = read_camera_line(args.camera, "--camera") if args.camera else None
    if args.bag is not None:
        from ros2_s2dhm.ros.bags import extract_frames  # noqa: PLC0415

        frames, bag_camera = extract_frames(args.bag, args.image_topic, args.site / "frames",
                                            args.camera_info_topic, args.every)
        camera = camera or bag_camera
    else:
        from ros2_s2dhm.ros.bags import list_timestamped_images  # noqa: PLC0415

        frames = [Frame(f"frames/{t.path.name}", t.path, t.timestamp_us * 1000)
                  for t in list_timestamped_images(args.images)][::args.every]
    if camera is None:
        raise S2DHMError("no camera: give --camera 'MODEL W H params...' (the bag has no "
                         f"CameraInfo on {args.camera_info_topic})")
    if args.pose_format == "tum":
        poses = poses_for_frames(frames, read_tum_poses(args.poses, args.pose_convention),
                                 args.max_time_diff)
    else:
        named = read_submission(args.poses)
        if args.pose_convention == "camera-to-world":
            named = {name: pose.inverse() for name, pose in named.items()}
        poses = {f.name: named[Path(f.name).name] for f in frames if Path(f.name).name in named}
    return triangulate_site(frames, poses, camera, args.site, args.matcher, args.overlap,
                            unit=args.unit or "m")


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = config_from_args(MapBuildConfig, args)  # a bad value fails before any work
        device = resolve_device(args.device)
        source = args.dataset if args.poses is None else site_from_drive(args)
        dataset = load_dataset(source, format=args.format)
        if args.unit is not None:
            dataset = dataclasses.replace(dataset, unit=args.unit)
        network, info = load_network(resolve_weights(args.weights), device)
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
