"""play_bag: replay a small bag through rclpy in-process to a subscriber."""
import os
import random
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

import rclpy  # noqa: E402  (pinned in requirements.txt: a missing install must fail, not skip)
pytestmark = pytest.mark.ros
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage  # noqa: E402

from offline_tools import play_bag  # noqa: E402
from ros2_s2dhm.errors import BagError  # noqa: E402
from ros2_s2dhm.geometry.camera import Camera  # noqa: E402
from ros2_s2dhm.ros.bag_player import (  # noqa: E402
    BagPlayer,
    PlayOptions,
    iter_rclpy_messages,
    message_class,
    parse_remaps,
)
from ros2_s2dhm.ros.bags import BagConfig, list_timestamped_images, write_image_folder_bag  # noqa: E402

STAMPS_US = [1417176458999821 + 50_000 * i for i in range(6)]
IMAGE_TOPIC = "/cam/image/compressed"
INFO_TOPIC = "/cam/camera_info"


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("play")
    folder = root / "images"
    folder.mkdir()
    for i, stamp in enumerate(STAMPS_US):
        cv2.imwrite(str(folder / f"{stamp}.jpg"), np.full((32, 48, 3), 20 * i, np.uint8))
    config = BagConfig(storage="mcap", image_topic=IMAGE_TOPIC, camera_info_topic=INFO_TOPIC, frame_id="cam")
    write_image_folder_bag(root / "bag", list_timestamped_images(folder), config,
                           Camera.from_pinhole(40, 40, 23.5, 15.5, 48, 32))
    return root / "bag"


@pytest.fixture
def ros_env(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", str(random.randint(1, 100)))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)


def _stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_iter_rclpy_messages(bag):
    msgs = list(iter_rclpy_messages(bag))
    images = [(s, m) for t, s, m in msgs if t == IMAGE_TOPIC]
    assert all(isinstance(m, CompressedImage) for _, m in images)
    assert [s for s, _ in images] == [us * 1000 for us in STAMPS_US]
    assert [_stamp_ns(m) for _, m in images] == [us * 1000 for us in STAMPS_US]
    infos = [m for t, _, m in msgs if t == INFO_TOPIC]
    assert isinstance(infos[0], CameraInfo) and infos[0].k[0] == 40.0 and infos[0].k[2] == 23.5
    if message_class("tf2_msgs/msg/TFMessage") is None:  # no wheel here: skipped, not an error
        assert all(t != "/tf_static" for t, _, _ in msgs)
    assert message_class("no_such_pkg/msg/Nothing") is None
    with pytest.raises(BagError, match="old_topic:=new_topic"):
        parse_remaps(["/a=/b"])
    assert parse_remaps(["/a:=/b"]) == {"/a": "/b"}


def test_replay_to_subscriber(bag, ros_env):
    context = rclpy.context.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    thread = None
    sub_node = rclpy.create_node("bag_test_listener", context=context)
    pub_node = rclpy.create_node("bag_test_player", context=context)
    received: dict[str, list] = {"image": [], "info": [], "clock": []}
    lock = threading.Lock()

    def collect(key):
        def callback(msg):
            with lock:
                received[key].append(msg)
        return callback

    qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
    sub_node.create_subscription(CompressedImage, "/replayed/image/compressed", collect("image"), qos)
    sub_node.create_subscription(CameraInfo, INFO_TOPIC, collect("info"), qos)
    sub_node.create_subscription(Clock, "/clock", collect("clock"), 100)
    try:
        executor.add_node(sub_node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        options = PlayOptions(rate=2.0, remap={IMAGE_TOPIC: "/replayed/image/compressed"}, publish_clock=True,
                              wait_for_subscribers=1, wait_timeout_s=15.0)
        player = BagPlayer(pub_node, bag, options)
        assert player.topics[IMAGE_TOPIC] == "/replayed/image/compressed"
        t0 = time.monotonic()
        stats = player.play()
        elapsed = time.monotonic() - t0
        # 6 frames 50 ms apart at rate 2: at least 125 ms of pacing
        assert elapsed >= 0.12
        assert stats.published == {"/replayed/image/compressed": 6, INFO_TOPIC: 6}
        if message_class("tf2_msgs/msg/TFMessage") is None:
            assert "/tf_static" in stats.skipped
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with lock:
                if len(received["image"]) >= 6 and len(received["info"]) >= 6:
                    break
            time.sleep(0.02)
        with lock:
            assert [_stamp_ns(m) for m in received["image"]] == [us * 1000 for us in STAMPS_US]
            assert [_stamp_ns(m) for m in received["info"]] == [us * 1000 for us in STAMPS_US]
            assert bytes(received["image"][0].data) == (bag.parent / "images" / f"{STAMPS_US[0]}.jpg").read_bytes()
            clocks = [c.clock.sec * 1_000_000_000 + c.clock.nanosec for c in received["clock"]]
        assert clocks, "no /clock message"
        assert clocks == sorted(clocks)
        assert STAMPS_US[0] * 1000 <= clocks[0] and clocks[-1] <= STAMPS_US[-1] * 1000 + 50_000_000
        player.close()
    finally:
        executor.shutdown()
        if thread is not None:
            thread.join(timeout=5)
        sub_node.destroy_node()
        pub_node.destroy_node()
        rclpy.shutdown(context=context)


def test_play_bag_cli(bag, ros_env, capsys):
    rc = play_bag.main([str(bag), "--rate", "0", "--topics", IMAGE_TOPIC, "--remap", f"{IMAGE_TOPIC}:=/x/image",
                        "--start-offset", "0.1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "/x/image: 4 messages" in out  # 0.1 s offset skips the first two frames
    assert play_bag.main([str(bag), "--topics", "/missing"]) == 1
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_corrupt_bag_is_reported_and_not_played(tmp_path, storage, ros_env, caplog):
    from ros2_s2dhm.ros.bag_check import check_bag

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for stamp in STAMPS_US:  # noise: large JPEGs, so the corruption lands in message data
        cv2.imwrite(str(folder / f"{stamp}.jpg"), rng.integers(0, 255, (240, 320, 3), np.uint8))
    config = BagConfig(storage=storage, image_topic=IMAGE_TOPIC, camera_info_topic=INFO_TOPIC)
    write_image_folder_bag(tmp_path / "bag", list_timestamped_images(folder), config,
                           Camera.from_pinhole(40, 40, 159.5, 119.5, 320, 240))
    report = check_bag(tmp_path / "bag")
    assert report.ok, report.summary()
    assert ("CRC" if storage == "mcap" else "integrity_check") in report.summary()
    assert report.chunks_without_crc == 0  # the writer stamps chunk CRCs as ros2 bag record does
    (storage_file,) = [p for p in (tmp_path / "bag").iterdir() if p.suffix in (".mcap", ".db3")]
    data = bytearray(storage_file.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 20_000] = bytes(20_000) if storage == "mcap" else b"\xff" * 20_000
    storage_file.write_bytes(bytes(data))
    report = check_bag(tmp_path / "bag")
    assert not report.ok, report.summary()
    assert storage_file.name in report.problems[0]
    if storage == "mcap":
        assert "chunk" in report.problems[0] and "ns" in report.problems[0], report.problems
    assert play_bag.main([str(tmp_path / "bag"), "--rate", "0"]) == 1
    assert "CORRUPT" in caplog.text and "not played" in caplog.text


def test_qos_choice(bag):
    from rclpy.qos import DurabilityPolicy

    from ros2_s2dhm.ros.bag_player import parse_qos_overrides, qos_for_topic
    from ros2_s2dhm.ros.bags import bag_topics

    specs = bag_topics(bag)
    tf_qos = qos_for_topic(specs["/tf_static"])
    assert tf_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL and tf_qos.reliability == ReliabilityPolicy.RELIABLE
    image_qos = qos_for_topic(specs[IMAGE_TOPIC])
    assert image_qos.durability == DurabilityPolicy.VOLATILE and image_qos.reliability == ReliabilityPolicy.RELIABLE
    overridden = qos_for_topic(specs[IMAGE_TOPIC], override="best_effort")
    assert overridden.reliability == ReliabilityPolicy.BEST_EFFORT
    assert parse_qos_overrides([f"{IMAGE_TOPIC}=transient_local"]) == {IMAGE_TOPIC: "transient_local"}
    with pytest.raises(BagError, match="topic="):
        parse_qos_overrides([f"{IMAGE_TOPIC}=latched"])


@pytest.mark.slow
@pytest.mark.parametrize("tool, signum", [("play_bag", "SIGINT"), ("play_bag", "SIGTERM"),
                                          ("record_poses", "SIGINT"), ("record_poses", "SIGTERM")])
def test_tools_stop_on_signal(bag, ros_env, tmp_path, tool, signum):
    """The player (waiting for a subscriber) and the recorder (waiting for poses) stop on
    SIGINT/SIGTERM within 10 s, exit 0, no traceback; the recorder still writes its file."""
    import signal
    import subprocess
    import sys

    args = {"play_bag": [str(bag), "--wait-for-subscribers", "1", "--wait-timeout", "120",
                         "--loop"],
            "record_poses": [str(tmp_path / "poses.txt"), "--name-format", "{stamp_us}.jpg"]}[tool]
    proc = subprocess.Popen([sys.executable, "-m", f"offline_tools.{tool}", *args],
                            cwd=Path(__file__).resolve().parents[1], text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(6.0)  # started and waiting
    assert proc.poll() is None, proc.communicate()[0]
    proc.send_signal(getattr(signal, signum))
    try:
        out, _ = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"{tool} still running 10 s after {signum}:\n{proc.communicate()[0]}")
    assert proc.returncode == 0 and "Traceback" not in out, out
    if tool == "record_poses":
        assert (tmp_path / "poses.txt").exists()
