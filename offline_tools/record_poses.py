"""Record the localizer's poses into a visuallocalization.net submission file.

    record_poses OUT.txt --name-format "rear/{stamp_us}.jpg"
    record_poses OUT.txt --names queries.txt            # '<stamp_ns> <name>' or names with µs stamps
    record_poses OUT.txt --bag BAG --image-topic /camera/image/compressed \
                         --name-format "rear/{stamp_us}.jpg"    # knows which frames to expect

Subscribes to the pose topic (PoseWithCovarianceStamped of the camera in the map, as
s2dhm_localizer publishes it) and writes ``name qw qx qy qz tx ty tz`` (world-to-camera)
after every pose, so a replayed bag can be scored with ``evaluate``. Stops on Ctrl-C, after
--count poses, --idle-timeout seconds without a pose (once one arrived), --timeout seconds,
or when every frame of --bag has a pose. It logs 'pose publisher found' once the
localizer is discovered: start playing after that line, poses published earlier are lost. Failed frames publish nothing and are absent from
the file, which the evaluator counts as not localized.
Set ROS_DOMAIN_ID / ROS_AUTOMATIC_DISCOVERY_RANGE as for any ROS 2 process.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ros2_s2dhm.errors import S2DHMError

log = logging.getLogger("record_poses")


def parse_args(argv=None) -> argparse.Namespace:
    doc = __doc__.split("\n")
    p = argparse.ArgumentParser(prog="record_poses", description=doc[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(doc[1:]))
    p.add_argument("output", type=Path, help="submission file to write")
    p.add_argument("--topic", default="/s2dhm_localizer/pose", help="pose topic (default %(default)s)")
    names = p.add_mutually_exclusive_group()
    names.add_argument("--names", type=Path, help="file of '<stamp_ns> <name>' lines or names "
                                                   "holding µs timestamps (a query list)")
    names.add_argument("--bag", type=Path, help="bag whose image stamps are the expected frames")
    p.add_argument("--image-topic", default="/camera/image/compressed",
                   help="image topic in --bag (default %(default)s)")
    p.add_argument("--name-format", default=None,
                   help="name of a frame from its stamp: {stamp_us}, {stamp_ns}, {sec}, {nanosec} "
                        "(e.g. 'rear/{stamp_us}.jpg')")
    p.add_argument("--base-to-camera", type=float, nargs=6, metavar=("X", "Y", "Z", "R", "P", "Y"),
                   help="the node publishes a base frame: camera pose in base (x y z roll pitch yaw)")
    p.add_argument("--count", type=int, default=0, help="stop after this many poses (0: no limit)")
    p.add_argument("--idle-timeout", type=float, default=0.0,
                   help="stop this many seconds after the last pose (0: never)")
    p.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds (0: never)")
    p.add_argument("--node-name", default="s2dhm_pose_recorder")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.names is None and args.name_format is None:
        p.error("give --names FILE or --name-format FMT (with or without --bag)")
    return args


def _frame_names(args):
    from ros2_s2dhm.ros.pose_recorder import FrameNames  # noqa: PLC0415

    if args.names is not None:
        names = FrameNames.from_file(args.names)
        names.fmt = args.name_format
        return names
    if args.bag is not None:
        return FrameNames.from_bag(args.bag, args.image_topic, args.name_format)
    return FrameNames.from_format(args.name_format)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    import rclpy  # noqa: PLC0415
    from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: PLC0415

    from ros2_s2dhm.ros.conversions import transform_from_xyz_rpy  # noqa: PLC0415
    from ros2_s2dhm.ros.pose_recorder import PoseCollector  # noqa: PLC0415
    from ros2_s2dhm.ros.process import init_ros  # noqa: PLC0415

    try:
        frame_names = _frame_names(args)
    except S2DHMError as exc:
        log.error("%s", exc)
        return 2
    base = None if args.base_to_camera is None else transform_from_xyz_rpy(args.base_to_camera)
    collector = PoseCollector(frame_names, args.output, base)
    collector.write()  # an empty file exists from the start
    expected = frame_names.expected

    init_ros()
    node = rclpy.create_node(args.node_name)

    def on_pose(msg):
        record = collector.add(msg)
        if record is None:
            log.warning("pose stamped %d ns has no name: skipped", collector.unnamed[-1])
        else:
            log.debug("%s (%d poses)", record.name, len(collector.records))

    node.create_subscription(PoseWithCovarianceStamped, args.topic, on_pose, 100)
    log.info("recording %s -> %s%s", args.topic, args.output,
             f" ({len(expected)} frames expected)" if expected else "")
    start = time.monotonic()
    publisher_found = False
    try:
        while rclpy.ok():
            rclpy.spin_once(node, timeout_sec=0.1)
            if not publisher_found and node.count_publishers(args.topic):
                publisher_found = True  # poses published before discovery are lost (volatile)
                log.info("pose publisher found on %s", args.topic)
            now = time.monotonic()
            last = max((r.received_ns for r in collector.records.values()), default=None)
            if args.count and len(collector.records) >= args.count:
                break
            if expected and not collector.missing():
                break
            if args.timeout and now - start > args.timeout:
                break
            if (args.idle_timeout and last is not None
                    and time.time_ns() - last > args.idle_timeout * 1e9):
                break
    except KeyboardInterrupt:
        pass
    finally:
        written = collector.write()
        node.destroy_node()
        rclpy.try_shutdown()
    missing = collector.missing()
    log.info("wrote %d poses to %s%s", written, args.output,
             f"; {len(missing)} expected frames without a pose" if expected else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
