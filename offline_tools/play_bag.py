"""Replay a rosbag2 (mcap or sqlite3) through rclpy, for machines without `ros2 bag play`.

    play_bag BAG [--rate R] [--loop] [--start-offset S] [--remap old:=new ...]
             [--topics t1 t2 ...] [--qos topic=best_effort ...] [--clock [HZ]]
             [--wait-for-subscribers N] [--wait-timeout S] [--delay S] [--no-check]

Messages are published as recorded (CDR bytes unchanged) with the recorded timing scaled
by --rate (0 = as fast as possible). /tf_static and topics recorded transient-local are
published transient-local. Topics whose message package is not importable here (e.g.
tf2_msgs without a ROS install) are skipped with a log line. --clock publishes
rosgraph_msgs/Clock with the bag time (for nodes run with use_sim_time). Before playing,
the bag is checked (mcap: every chunk's CRC; sqlite3 has none: SQLite's integrity_check) and a
corrupt bag is not played: the error names each corrupt chunk and its message time range.
Set ROS_DOMAIN_ID / ROS_AUTOMATIC_DISCOVERY_RANGE as for any ROS 2 process.
"""
from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

from ros2_s2dhm.errors import S2DHMError

log = logging.getLogger("play_bag")


def parse_args(argv=None) -> argparse.Namespace:
    doc = __doc__.split("\n")
    p = argparse.ArgumentParser(prog="play_bag", description=doc[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(doc[1:]))
    p.add_argument("bag", type=Path, help="rosbag2 folder (holds metadata.yaml)")
    p.add_argument("--rate", type=float, default=1.0, help="playback rate, 0 = as fast as possible (default 1)")
    p.add_argument("--loop", action="store_true", help="play again and again until interrupted")
    p.add_argument("--start-offset", type=float, default=0.0, help="seconds to skip at the start (default 0)")
    p.add_argument("--remap", nargs="*", default=[], metavar="OLD:=NEW", help="topic remaps")
    p.add_argument("--topics", nargs="*", help="play only these recorded topics")
    p.add_argument("--clock", nargs="?", type=float, const=40.0, metavar="HZ",
                   help="publish /clock with the bag time (default 40 Hz when given)")
    p.add_argument("--qos", nargs="*", default=[], metavar="TOPIC=PROFILE",
                   help="per-topic publisher QoS: reliable, best_effort or transient_local "
                        "(default: as recorded; /tf_static transient_local)")
    p.add_argument("--qos-depth", type=int, default=10, help="publisher history depth (default 10)")
    p.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                   help="wait until every played topic has N subscribers before starting")
    p.add_argument("--wait-timeout", type=float, default=10.0, help="seconds, for --wait-for-subscribers")
    p.add_argument("--delay", type=float, default=0.0,
                   help="seconds to wait before the first message (after --wait-for-subscribers)")
    p.add_argument("--no-check", action="store_true",
                   help="play without checking the bag first (mcap CRCs / sqlite3 integrity_check)")
    p.add_argument("--node-name", default="s2dhm_bag_player")
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    import rclpy  # noqa: PLC0415  (the library import stays light for --help)

    from ros2_s2dhm.ros.process import init_ros  # noqa: PLC0415

    from ros2_s2dhm.ros.bag_player import (  # noqa: PLC0415
        BagPlayer,
        PlayOptions,
        parse_qos_overrides,
        parse_remaps,
    )

    try:
        options = PlayOptions(rate=args.rate, loop=args.loop, start_offset_s=args.start_offset,
                              remap=parse_remaps(args.remap), qos_overrides=parse_qos_overrides(args.qos),
                              topics=tuple(args.topics) if args.topics else None,
                              publish_clock=args.clock is not None, clock_hz=args.clock or 40.0,
                              wait_for_subscribers=args.wait_for_subscribers, wait_timeout_s=args.wait_timeout,
                              delay_s=args.delay, qos_depth=args.qos_depth)
    except S2DHMError as exc:
        log.error("%s", exc)
        return 1
    if not args.no_check:
        from ros2_s2dhm.ros.bag_check import check_bag  # noqa: PLC0415

        try:
            report = check_bag(args.bag)
        except S2DHMError as exc:
            log.error("%s", exc)
            return 1
        if not report.ok:
            log.error("%s\nnot played (--no-check plays it anyway)", report.summary())
            return 1
        (log.warning if report.chunks_without_crc else log.info)("%s", report.summary())
    context = rclpy.Context()
    init_ros(context=context)
    node = rclpy.create_node(args.node_name, context=context)
    stop = threading.Event()
    try:
        player = BagPlayer(node, args.bag, options)
        for topic, out in player.topics.items():
            log.info("playing %s%s", topic, f" as {out}" if out != topic else "")
        stats = player.play(stop)
    except S2DHMError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:  # Ctrl-C / SIGTERM: a normal stop, as for ros2 bag play
        stop.set()
        stats = player.stats if "player" in locals() else None
        if stats is not None:
            print(f"interrupted after {sum(stats.published.values())} messages")
        return 0
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    for topic, count in stats.published.items():
        print(f"{topic}: {count} messages")
    for topic, reason in stats.skipped.items():
        print(f"{topic}: skipped ({reason})")
    print(f"played {stats.loops} time(s) in {stats.wall_s:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
