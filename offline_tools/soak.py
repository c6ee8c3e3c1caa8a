"""Soak benchmark of the node: images at a fixed rate for minutes, latency and memory measured.

    soak --dataset SET --map MAP [--rate 30] [--duration 300] [--weights W] [--device D]
         [--condition C] [--qos sensor_data|reliable] [--publisher-qos best_effort|reliable]
         [--frames N] [--size WxH] [--out soak.json] [-p name:=value ...]

    # the frames-in probe: 20 full-size frames, one every 3 s, from a best-effort publisher
    soak --dataset SET --map MAP --frames 20 --rate 0.333 --size 640x480

Starts ``localizer_node`` as its own process on a random ROS domain (loopback discovery), at
its defaults plus ``-p``, then publishes the dataset's query images (raw ``rgb8`` Image +
CameraInfo, stamped with the send time, resized to ``--size``) at ``--rate`` Hz for
``--duration`` seconds or ``--frames`` frames, cycling through them, as a camera driver does
(best-effort unless ``--publisher-qos reliable``). Measured:

* latency: image publish -> pose received, for every frame that got a pose (the pose carries
  the image's stamp), median / p90 / max;
* the node's own pipeline time per processed frame (``latency_total_ms`` on /diagnostics),
  median: the bound the latency is judged against (p90 <= 1.5x, max <= 2.5x);
* the overhead: each frame's latency minus its own pipeline time (transport, waiting in the
  slot, decoding, publishing), which is what the node's queueing adds;
* what happened to the frames: sent, reached the node's callback (bound: 95 % when sent slower
  than the node localizes; faster, unread frames are replaced by design), lost before
  it (the node's estimate from stamp gaps beside the true count, sent - received), dropped in
  its slot, processed, poses (from its /diagnostics counters, read once the node is idle);
* the node's resident memory (``/proc/PID/status`` VmRSS, Linux) every second: the last
  minute's maximum against the first minute's (flat: within 10 %).

Prints a table and writes JSON (``--out``). Stops the node with SIGINT at the end.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from ros2_s2dhm.datasets import load_dataset, read_image
from ros2_s2dhm.errors import S2DHMError

log = logging.getLogger("soak")
NODE = "/s2dhm_localizer"
LATENCY_P90_BOUND = 1.5
LATENCY_MAX_BOUND = 2.5
RSS_GROWTH_BOUND = 0.10
FRAMES_IN_BOUND = 0.95


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="soak", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n")[1:]))
    p.add_argument("--dataset", type=Path, required=True, help="dataset whose queries are sent")
    p.add_argument("--map", type=Path, required=True, help="its reference map")
    p.add_argument("--condition", default=None, help="only queries of this condition")
    p.add_argument("--rate", type=float, default=30.0, help="images per second (default 30)")
    p.add_argument("--duration", type=float, default=300.0, help="seconds of sending (default 300)")
    p.add_argument("--weights", default="default")
    p.add_argument("--device", default="auto")
    p.add_argument("--qos", default=None, choices=("sensor_data", "reliable", "system_default"),
                   help="the node's image_qos (default: the node's default)")
    p.add_argument("--publisher-qos", default="best_effort", choices=("best_effort", "reliable"),
                   help="reliability of the image publisher (default best_effort, as camera "
                        "drivers publish)")
    p.add_argument("--compressed", action="store_true",
                   help="publish JPEG CompressedImage on image/compressed (node: use_compressed)")
    p.add_argument("--jpeg-quality", type=int, default=90, help="with --compressed (default 90)")
    p.add_argument("--frames", type=int, default=0,
                   help="send this many frames, then stop (0: --duration decides)")
    p.add_argument("--size", type=_size, default=None, metavar="WxH",
                   help="resize the images to this size (intrinsics scaled); default: as stored")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME:=VALUE",
                   help="more node parameters")
    p.add_argument("--images", type=int, default=20, help="distinct images cycled (default 20)")
    p.add_argument("--out", type=Path, default=Path("soak.json"))
    return p.parse_args(argv)


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 640x480")
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"--size {text!r}: width and height must be positive")
    return width, height


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (Linux /proc), None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def percentile(values, q) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def summarize(latencies_s, pipeline_ms, rss, counters, sent, duration_s, overheads_s=()) -> dict:
    """The report: latency against the node's median pipeline time, RSS first vs last minute."""
    pipeline_s = float(np.median(pipeline_ms)) / 1e3 if len(pipeline_ms) else None
    lat = np.asarray(latencies_s, float)
    out = {"sent": sent, "duration_s": duration_s, "poses": int(lat.size),
           "latency_median_s": percentile(lat, 50), "latency_p90_s": percentile(lat, 90),
           "latency_max_s": float(lat.max()) if lat.size else None,
           "pipeline_median_s": pipeline_s, "node_counters": counters,
           "overhead_median_s": percentile(overheads_s, 50),
           "overhead_p90_s": percentile(overheads_s, 90),
           "overhead_max_s": float(np.max(overheads_s)) if len(overheads_s) else None}
    if pipeline_s and lat.size:
        out["latency_p90_over_pipeline"] = out["latency_p90_s"] / pipeline_s
        out["latency_max_over_pipeline"] = out["latency_max_s"] / pipeline_s
    times = np.array([t for t, _ in rss])
    mem = np.array([m for _, m in rss])
    if times.size:
        first = mem[times <= times[0] + 60.0]
        last = mem[times >= times[-1] - 60.0]
        out.update({"rss_first_minute_max_mb": float(first.max()),
                    "rss_last_minute_max_mb": float(last.max()),
                    "rss_growth": float(last.max() / first.max() - 1.0)})
    received = counters.get("frames_received")
    out["reached_callback"] = received / sent if sent and received is not None else None
    # faster than the node localizes, its depth-1 subscription replaces unread frames by design
    out["frames_in_judged"] = bool(pipeline_s and duration_s and sent / duration_s < 1 / pipeline_s)
    out["verdict"] = {
        "frames_in": out["reached_callback"] is not None and (
            not out["frames_in_judged"] or out["reached_callback"] >= FRAMES_IN_BOUND),
        "latency_p90": (out.get("latency_p90_over_pipeline") is not None
                        and out["latency_p90_over_pipeline"] <= LATENCY_P90_BOUND),
        "latency_max": (out.get("latency_max_over_pipeline") is not None
                        and out["latency_max_over_pipeline"] <= LATENCY_MAX_BOUND),
        "rss_flat": out.get("rss_growth") is not None and out["rss_growth"] <= RSS_GROWTH_BOUND}
    return out


def format_report(r: dict) -> str:
    def f(v, unit="", scale=1.0):
        return "n/a" if v is None else f"{v * scale:.2f}{unit}"
    c = r["node_counters"]
    lines = [
        f"sent {r['sent']} images in {r['duration_s']:.0f} s; reached the node's callback "
        f"{c.get('frames_received', '?')} ({f(r.get('reached_callback'), ' %', 100)}; "
        + (f"bound {FRAMES_IN_BOUND * 100:.0f} %" if r.get("frames_in_judged") else
           "not judged: sent faster than the node localizes, so unread frames are replaced")
        + f"), lost before it {c.get('frames_lost', '?')} "
        f"(true: {r['sent'] - c['frames_received'] if 'frames_received' in c else '?'}), "
        f"dropped in slot {c.get('frames_dropped', '?')}, processed {c.get('frames_processed', '?')}"
        f", poses published {c.get('poses_published', '?')}; poses received {r['poses']}",
        f"node pipeline time (median): {f(r['pipeline_median_s'], ' s')}, of which decoding the "
        f"message {f(r.get('decode_median_ms'), ' ms')}",
        f"publish -> pose latency: median {f(r['latency_median_s'], ' s')}, p90 "
        f"{f(r['latency_p90_s'], ' s')} ({f(r.get('latency_p90_over_pipeline'), 'x')} the pipeline; "
        f"bound {LATENCY_P90_BOUND}x), max {f(r['latency_max_s'], ' s')} "
        f"({f(r.get('latency_max_over_pipeline'), 'x')}; bound {LATENCY_MAX_BOUND}x)",
        f"overhead (latency - the frame's own pipeline time): median "
        f"{f(r['overhead_median_s'], ' s')}, p90 {f(r['overhead_p90_s'], ' s')}, max "
        f"{f(r['overhead_max_s'], ' s')}",
        f"node RSS: first minute max {f(r.get('rss_first_minute_max_mb'), ' MB')}, last minute max "
        f"{f(r.get('rss_last_minute_max_mb'), ' MB')} ({f(r.get('rss_growth'), ' %', 100)}; bound "
        f"{RSS_GROWTH_BOUND * 100:.0f} %)",
        "verdict: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in r["verdict"].items())]
    return "\n".join(lines)


def _wait_idle(counters: dict, lock, sent: int, timeout_s: float = 60.0) -> None:
    """Until the node's counters account for every frame it received (the frame in flight is
    done) and a heartbeat later, at most ``timeout_s``."""
    end = time.monotonic() + timeout_s
    time.sleep(2.0)  # frames still on their way, the next heartbeat
    while time.monotonic() < end:
        with lock:
            received = counters.get("frames_received", 0)
            done = sum(counters.get(k, 0) for k in (
                "frames_processed", "frames_dropped", "frames_stale", "frames_bad_input"))
        if received and done >= received:
            break
        time.sleep(0.5)
    time.sleep(1.5)  # a heartbeat after the last frame


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import rclpy  # noqa: PLC0415
    from diagnostic_msgs.msg import DiagnosticArray  # noqa: PLC0415
    from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: PLC0415
    from rclpy.executors import SingleThreadedExecutor  # noqa: PLC0415
    from rclpy.time import Time  # noqa: PLC0415
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data  # noqa: PLC0415
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: PLC0415

    from ros2_s2dhm.ros.conversions import camera_to_camera_info  # noqa: PLC0415
    from ros2_s2dhm.ros.process import init_ros  # noqa: PLC0415

    try:
        dataset = load_dataset(args.dataset)
    except S2DHMError as exc:
        log.error("%s", exc)
        return 1
    queries = [q for q in dataset.queries if args.condition in (None, q.condition)]
    if not queries:
        log.error("no queries%s in %s", f" of condition {args.condition!r}" if args.condition
                  else "", args.dataset)
        return 1
    picked = [queries[i] for i in np.linspace(0, len(queries) - 1, min(args.images, len(queries)),
                                              dtype=int)]
    domain = random.randint(101, 230)
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain),
               PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "ros2_s2dhm.ros.localizer_node", "--ros-args",
           "-p", f"map_dir:={args.map}", "-p", f"weights:={args.weights}",
           "-p", f"device:={args.device}", "-p", "tracking_enabled:=false"]
    if args.qos:
        cmd += ["-p", f"image_qos:={args.qos}"]
    if args.compressed:
        cmd += ["-p", "use_compressed:=true"]
    for extra in args.param:
        cmd += ["-p", extra]
    node = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    node_lines: list[str] = []
    ready = threading.Event()

    def read_node():
        for line in node.stdout:
            node_lines.append(line)
            if "ready:" in line:
                ready.set()
    threading.Thread(target=read_node, daemon=True).start()

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    context = rclpy.Context()
    init_ros(context=context, domain_id=domain)
    client = rclpy.create_node("s2dhm_soak", context=context)
    qos = (qos_profile_sensor_data if args.publisher_qos == "best_effort"
           else QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    image_pub = (client.create_publisher(CompressedImage, "image/compressed", qos)
                 if args.compressed else client.create_publisher(Image, "image", qos))
    info_pub = client.create_publisher(CameraInfo, "camera_info", qos)
    sent_at: dict[int, float] = {}
    latencies, pipeline_ms, decode_ms, rss = [], [], [], []
    pipeline_of: dict[int, float] = {}  # frame stamp -> its pipeline ms
    latency_of: dict[int, float] = {}
    counters: dict = {}
    lock = threading.Lock()

    def on_pose(msg):
        now = time.monotonic()
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        with lock:
            if stamp in sent_at:
                latencies.append(now - sent_at[stamp])
                latency_of[stamp] = latencies[-1]

    def on_diagnostics(msg):
        for status in msg.status:
            if not status.name.startswith("s2dhm_localizer"):
                continue
            values = {kv.key: kv.value for kv in status.values}
            frame = values.get("frames_processed")
            with lock:
                counters.update({k: int(v) for k, v in values.items()
                                 if k.startswith(("frames_", "poses_", "localization_"))
                                 and v.isdigit()})  # frames_lost may be "unknown (...)"
                if "latency_decode_ms" in values and frame != counters.get("_last_timed"):
                    decode_ms.append(float(values["latency_decode_ms"]))
                total = values.get("latency_total_ms")
                if total is not None and frame != counters.get("_last_timed"):
                    pipeline_ms.append(float(total))
                    counters["_last_timed"] = frame
                    if "frame_stamp_ns" in values:
                        pipeline_of[int(values["frame_stamp_ns"])] = float(total)

    client.create_subscription(PoseWithCovarianceStamped, f"{NODE}/pose", on_pose, 100)
    client.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 100)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()

    messages = []
    for q in picked:
        image, camera = read_image(q.path), q.camera
        if args.size is not None and args.size != (camera.width, camera.height):
            width, height = args.size
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            camera = camera.scaled(width / camera.width, height / camera.height, width, height)
        if args.compressed:  # as image_transport's compressed publisher writes it
            ok, data = cv2.imencode(".jpg", image[:, :, ::-1],
                                    [cv2.IMWRITE_JPEG_QUALITY, args.jpeg_quality])
            msg = CompressedImage(format="rgb8; jpeg compressed bgr8", data=data.tobytes())
        else:
            msg = Image(width=camera.width, height=camera.height, encoding="rgb8",
                        step=camera.width * 3, data=np.ascontiguousarray(image).tobytes())
        msg.header.frame_id = "camera"
        messages.append((msg, camera_to_camera_info(camera, frame_id="camera")))
    sent = 0
    start = None
    try:
        if not ready.wait(300):
            log.error("the node did not become ready:\n%s", "".join(node_lines[-30:]))
            return 1
        while image_pub.get_subscription_count() == 0:
            time.sleep(0.05)
        time.sleep(1.0)
        info = messages[0][1]
        log.info("sending %d distinct %dx%d %s images (%.0f KB) at %.3g Hz, %s, %s publisher",
                 len(messages), info.width, info.height, "JPEG" if args.compressed else "rgb8",
                 len(messages[0][0].data) / 1024, args.rate, f"{args.frames} frames"
                 if args.frames else f"for {args.duration:.0f} s", args.publisher_qos)
        start = time.monotonic()
        stamp0_ns = client.get_clock().now().nanoseconds
        next_rss = start
        period = 1.0 / args.rate
        while (sent < args.frames if args.frames
               else time.monotonic() - start < args.duration):
            now = time.monotonic()
            msg, info = messages[sent % len(messages)]
            # stamped at its scheduled time, as a camera stamps its frames at a fixed rate
            stamp = Time(nanoseconds=stamp0_ns + round(sent * period * 1e9)).to_msg()
            msg.header.stamp = info.header.stamp = stamp
            with lock:
                sent_at[stamp.sec * 10**9 + stamp.nanosec] = time.monotonic()
            info_pub.publish(info)
            image_pub.publish(msg)
            sent += 1
            if now >= next_rss:
                mem = rss_mb(node.pid)
                if mem is not None:
                    rss.append((now - start, mem))
                next_rss += 1.0
            time.sleep(max(0.0, start + sent * period - time.monotonic()))
        _wait_idle(counters, lock, sent)
    except KeyboardInterrupt:
        pass
    finally:
        duration = time.monotonic() - start if start is not None else 0.0
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=60)
        except subprocess.TimeoutExpired:
            node.kill()
        executor.shutdown()
        client.destroy_node()
        rclpy.try_shutdown(context=context)
    with lock:
        counters.pop("_last_timed", None)
        overheads = [latency_of[s] - pipeline_of[s] / 1e3 for s in latency_of if s in pipeline_of]
        report = summarize(latencies, pipeline_ms, rss, dict(counters), sent, duration, overheads)
        report["decode_median_ms"] = percentile(decode_ms, 50)
    report.update({"rate_hz": args.rate, "map": str(args.map), "dataset": str(args.dataset),
                   "qos": args.qos, "publisher_qos": args.publisher_qos, "size": args.size,
                   "compressed": args.compressed,
                   "params": args.param, "rss_mb": rss,
                   "latencies_s": latencies, "pipeline_ms": pipeline_ms})
    args.out.write_text(json.dumps(report, indent=1))
    print(format_report(report))
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
