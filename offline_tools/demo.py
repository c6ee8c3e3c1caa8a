"""The main job end to end on this machine: `make demo`.

synthetic seasons set (RobotCar Seasons layout) -> reference map -> rosbag2 of a night
sequence -> ``localizer_node`` (its own process) <- bag replay, poses recorded -> recall
table against the ground truth, and per-frame latency (image publish -> pose received).

Every step is skipped when its output already exists, so a second run is quick.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from ros2_s2dhm.datasets import load_dataset
from ros2_s2dhm.datasets.synthetic.generate import SIZES, generate_synthetic
from ros2_s2dhm.errors import S2DHMError
from ros2_s2dhm.evaluation import report as rep
from ros2_s2dhm.evaluation.recall import REPORT_THRESHOLDS, evaluate_recall
from ros2_s2dhm.datasets.submission import read_submission
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.map_builder import MapBuildConfig, build_reference_map
from ros2_s2dhm.reference_map import ReferenceMap
from ros2_s2dhm.ros.bags import BagConfig, write_seasons_bag
from ros2_s2dhm.runtime import resolve_device, resolve_weights

log = logging.getLogger("demo")
IMAGE_TOPIC = "/camera/image"
POSE_TOPIC = "/s2dhm_localizer/pose"


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="demo", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("demo_output"), help="work folder (default %(default)s)")
    p.add_argument("--seed", type=int, default=1, help="synthetic scene seed (default 1, held out "
                                                     "from the shipped weights' training)")
    p.add_argument("--condition", default="night", help="query condition replayed (default night)")
    p.add_argument("--frames", type=int, default=10, help="frames in the replayed sequence")
    p.add_argument("--weights", default="default", help="'default', 'random' or a weights file")
    p.add_argument("--device", default="auto")
    p.add_argument("--rate", type=float, default=0.5,
                   help="replay rate (bag frames are 2 s apart; 0.5 = one frame every 4 s)")
    p.add_argument("--width", type=int, default=640, help="rendered image width (default 640)")
    p.add_argument("--height", type=int, default=480, help="rendered image height (default 480)")
    return p.parse_args(argv)


def prepare(args, device: str):
    """Dataset, map and bag (each reused when already there). Returns (dataset root, map, bag, weights)."""
    data = args.out / f"synthetic_seed{args.seed}_{args.width}x{args.height}"
    if not (data / "ground_truth.txt").is_file():
        size = dataclasses.replace(SIZES["default"], queries_per_condition=args.frames,
                                   width=args.width, height=args.height)
        log.info("rendering the synthetic set into %s", data)
        generate_synthetic(data, seed=args.seed, size=size, conditions=[args.condition], progress=True)
    network, info = load_network(resolve_weights(args.weights), device)
    map_dir = args.out / f"map_{info.sha256[:12]}_{args.width}x{args.height}"
    try:
        ReferenceMap.load(map_dir, info.sha256)
    except S2DHMError:
        log.info("building the map in %s (default settings)", map_dir)
        build_reference_map(load_dataset(data), network, info.sha256, info.kind, map_dir,
                            MapBuildConfig(), device)
    bag = args.out / f"bag_{args.condition}"
    if bag.exists():
        shutil.rmtree(bag)
    write_seasons_bag(bag, data, args.condition, "rear", BagConfig(image_topic=IMAGE_TOPIC + "/compressed"))
    return data, map_dir, bag, info


def start_node(args, map_dir: Path, device: str, use_ratio_test: bool) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ros2_s2dhm.ros.localizer_node", "--ros-args",
           "-p", f"map_dir:={map_dir}", "-p", f"weights:={args.weights}", "-p", f"device:={device}",
           "-p", "use_compressed:=true", "-p", "image_qos:=reliable",
           "-p", f"use_ratio_test:={'true' if use_ratio_test else 'false'}",
           "-r", f"image:={IMAGE_TOPIC}", "-r", "camera_info:=/camera/camera_info"]
    return subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def replay_and_record(bag: Path, out: Path, rate: float, expected_frames: int, idle_s: float):
    """Play the bag into the node and collect its poses; returns (collector, play start, first stamp)."""
    import rclpy
    from geometry_msgs.msg import PoseWithCovarianceStamped
    from rclpy.executors import SingleThreadedExecutor

    from ros2_s2dhm.ros.bag_player import BagPlayer, PlayOptions
    from ros2_s2dhm.ros.pose_recorder import FrameNames, PoseCollector
    from ros2_s2dhm.ros.process import init_ros

    names = FrameNames.from_bag(bag, IMAGE_TOPIC + "/compressed", "rear/{stamp_us}.jpg")
    collector = PoseCollector(names, out)
    init_ros()
    node = rclpy.create_node("s2dhm_demo")
    node.create_subscription(PoseWithCovarianceStamped, POSE_TOPIC, collector.add, 100)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        player = BagPlayer(node, bag, PlayOptions(rate=rate, wait_for_subscribers=1, wait_timeout_s=600,
                                                  topics=(IMAGE_TOPIC + "/compressed", "/camera/camera_info")))
        log.info("waiting for the node to load the map and subscribe ...")
        if not player.wait_for_subscribers():
            raise S2DHMError("the localizer node did not subscribe within 10 minutes")
        t0 = time.time_ns()
        player.play()
        last = time.monotonic()
        seen = 0
        while len(collector.records) < expected_frames and time.monotonic() - last < idle_s:
            time.sleep(0.2)
            if len(collector.records) != seen:
                seen, last = len(collector.records), time.monotonic()
        player.close()
    finally:
        executor.shutdown()
        spinner.join(timeout=5)
        node.destroy_node()
        rclpy.shutdown()
    return collector, t0, min(names.expected)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(40 + os.getpid() % 60))
    device = resolve_device(args.device)
    data, map_dir, bag, info = prepare(args, device)
    use_ratio_test = not info.random
    if info.random:
        log.warning("RANDOM weights (no shipped weights found): the ratio test is switched off and "
                    "results are not meaningful across conditions")
    node = start_node(args, map_dir, device, use_ratio_test)
    out = args.out / f"poses_{args.condition}.txt"
    try:
        ground_truth = read_submission(data / "ground_truth.txt")
        frames = {n: g for n, g in ground_truth.items()
                  if (data / "images" / args.condition / n).is_file()}
        collector, t0, first_stamp = replay_and_record(bag, out, args.rate, len(frames), idle_s=15.0)
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node_log, _ = node.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
            node_log, _ = node.communicate()
    (args.out / "node.log").write_text(node_log)

    recorded = read_submission(out) if out.is_file() else {}
    report = evaluate_recall({n: args.condition for n in frames}, {"fpnp": recorded}, frames,
                             REPORT_THRESHOLDS)
    latency = np.array([(r.received_ns - t0 - (r.stamp_ns - first_stamp) / args.rate) / 1e6
                        for r in collector.records.values()])
    print(f"\nweights: {rep.describe_weights(info)}; device {device}; replay rate {args.rate}")
    print(f"{len(recorded)} of {len(frames)} {args.condition} frames got a pose on {POSE_TOPIC} "
          f"(frames the node failed on or dropped while busy publish nothing)")
    print(rep.format_recall_table(report))
    if len(latency):
        print(f"latency image publish -> pose received: median {np.median(latency):.0f} ms, "
              f"p90 {np.percentile(latency, 90):.0f} ms over {len(latency)} frames")
    print(f"poses: {out}   node log: {args.out / 'node.log'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
