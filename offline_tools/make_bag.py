"""Turn an image sequence into a rosbag2 (mcap or sqlite3) with images, CameraInfo and /tf_static.

    make_bag seasons      OUT --root DIR --condition night --camera rear   [bag options]
    make_bag folder       OUT --images DIR [--intrinsics FILE]             [bag options]
    make_bag robotcar-raw OUT --sequence DIR --camera mono_rear --models DIR
                          [--extrinsics DIR] [--no-undistort] [--encoding jpeg|png|rgb8|bgr8]

seasons: RobotCar Seasons layout, images/<condition>/<camera>/<timestamp_us>.jpg and
    intrinsics/<camera>_intrinsics.txt; the JPEG bytes go into the bag unchanged.
folder: any folder of <timestamp_us>.jpg|.png files (bytes unchanged); CameraInfo only
    with --intrinsics (same four-line format).
robotcar-raw: a raw Oxford RobotCar sequence (Bayer PNGs, <camera>.timestamps, SDK camera
    models and extrinsics): demosaiced, undistorted through the SDK look-up table when
    present, written as sensor_msgs/Image (rgb8/bgr8) or re-encoded CompressedImage.

Header stamps come from the µs timestamps of the file names. --bag-version 9 for
Jazzy/Kilted, 8 for Humble.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from ros2_s2dhm.datasets.robotcar_raw import CAMERAS, RawSequence
from ros2_s2dhm.errors import BagError, S2DHMError
from ros2_s2dhm.ros.bags import (
    BagConfig,
    write_folder_bag,
    write_robotcar_raw_bag,
    write_seasons_bag,
)

log = logging.getLogger("make_bag")


def _read_matrix(path: Path) -> np.ndarray:
    try:
        T = np.loadtxt(path, dtype=np.float64).reshape(4, 4)
    except (OSError, ValueError) as exc:
        raise BagError(f"{path}: expected a 4x4 matrix (4 rows of 4 numbers): {exc}") from None
    return T


def parse_args(argv=None) -> argparse.Namespace:
    doc = __doc__.split("\n")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("out", type=Path, help="output bag folder (must not exist)")
    common.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="(default %(default)s)")
    common.add_argument("--bag-version", type=int, choices=(8, 9), default=9,
                        help="rosbag2 metadata version: 9 Jazzy/Kilted, 8 Humble (default %(default)s)")
    common.add_argument("--image-topic", help="default /camera/image/compressed, or /camera/image for rgb8/bgr8")
    common.add_argument("--camera-info-topic", default="/camera/camera_info", help="(default %(default)s)")
    common.add_argument("--tf-static-topic", default="/tf_static", help="(default %(default)s)")
    common.add_argument("--frame-id", default="camera", help="optical frame of the images (default %(default)s)")
    common.add_argument("--base-frame", default="base_link", help="parent frame in /tf_static (default %(default)s)")
    common.add_argument("--jpeg-format", default="jpeg",
                        help="CompressedImage.format of JPEG data, e.g. 'rgb8; jpeg compressed bgr8' "
                             "(default %(default)s)")
    common.add_argument("-v", "--verbose", action="store_true")

    parser = argparse.ArgumentParser(prog="make_bag", description=doc[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(doc[1:]))
    sub = parser.add_subparsers(dest="source", required=True)
    p = sub.add_parser("seasons", parents=[common], help="RobotCar Seasons layout")
    p.add_argument("--root", type=Path, required=True, help="dataset root holding images/ and intrinsics/")
    p.add_argument("--condition", required=True, help="folder under images/, e.g. night")
    p.add_argument("--camera", required=True, help="folder under images/<condition>/, e.g. rear")
    p.add_argument("--camera-pose", type=Path,
                   help="4x4 matrix file: pose of the optical frame in --base-frame (default identity)")

    p = sub.add_parser("folder", parents=[common], help="any folder of <timestamp_us>.jpg|.png")
    p.add_argument("--images", type=Path, required=True, help="image folder")
    p.add_argument("--intrinsics", type=Path, help="fx/fy/cx/cy intrinsics file (no CameraInfo without it)")
    p.add_argument("--camera-pose", type=Path,
                   help="4x4 matrix file: pose of the optical frame in --base-frame (default identity)")

    p = sub.add_parser("robotcar-raw", parents=[common], help="raw Oxford RobotCar sequence")
    p.add_argument("--sequence", type=Path, required=True, help="sequence folder, e.g. 2014-12-09-13-21-02")
    p.add_argument("--camera", required=True, choices=CAMERAS + ("stereo",))
    p.add_argument("--models", type=Path, help="SDK models/ folder (CameraInfo and undistortion)")
    p.add_argument("--extrinsics", type=Path, help="SDK extrinsics/ folder (default: camera at the vehicle origin)")
    p.add_argument("--extrinsics-vehicle-from-camera", action="store_true",
                   help="read the extrinsics as the camera pose in the vehicle frame instead of the SDK's "
                        "G_camera_vehicle")
    p.add_argument("--no-undistort", action="store_true", help="keep the distorted images")
    p.add_argument("--encoding", choices=("jpeg", "png", "rgb8", "bgr8"), default="jpeg",
                   help="jpeg/png: CompressedImage, rgb8/bgr8: Image (default %(default)s)")
    p.add_argument("--jpeg-quality", type=int, default=95, help="(default %(default)s)")
    p.add_argument("--start", type=int, default=0, help="first frame index (default 0)")
    p.add_argument("--step", type=int, default=1, help="take every n-th frame (default 1)")
    p.add_argument("--limit", type=int, help="at most this many frames")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    raw_image = args.source == "robotcar-raw" and args.encoding in ("rgb8", "bgr8")
    image_topic = args.image_topic or ("/camera/image" if raw_image else "/camera/image/compressed")
    try:
        config = BagConfig(storage=args.storage, version=args.bag_version, image_topic=image_topic,
                           camera_info_topic=args.camera_info_topic, tf_static_topic=args.tf_static_topic,
                           frame_id=args.frame_id, base_frame=args.base_frame, jpeg_format=args.jpeg_format)
        if args.source == "seasons":
            pose = _read_matrix(args.camera_pose) if args.camera_pose else None
            summary = write_seasons_bag(args.out, args.root, args.condition, args.camera, config, pose)
        elif args.source == "folder":
            pose = _read_matrix(args.camera_pose) if args.camera_pose else None
            summary = write_folder_bag(args.out, args.images, config, args.intrinsics, pose)
        else:
            sequence = RawSequence(args.sequence, args.camera, args.models, args.extrinsics,
                                   undistort=not args.no_undistort,
                                   extrinsics_camera_from_vehicle=not args.extrinsics_vehicle_from_camera)
            summary = write_robotcar_raw_bag(args.out, sequence, config, args.encoding, args.jpeg_quality,
                                             args.start, args.limit, args.step)
    except S2DHMError as exc:
        log.error("%s", exc)
        return 1
    for topic, count in summary.counts.items():
        print(f"{topic}: {count} messages")
    print(f"wrote {summary.path} ({(summary.end_ns - summary.start_ns) / 1e9:.3f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
