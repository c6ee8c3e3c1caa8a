"""The s2dhm_localizer node in-process, with a fake pipeline injected through
``localizer_node.PIPELINE_FACTORY`` (the real pipeline is exercised by the end-to-end test).

Each test starts a node with its own parameters, talks to it through a client node over
loopback DDS on a random domain, and checks what the node publishes.
"""
import os
import random
import threading
import time

import cv2
import numpy as np
import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
os.environ["ROS_DOMAIN_ID"] = str(random.Random().randint(1, 100))

import rclpy  # noqa: E402  (pinned in requirements.txt: a missing install must fail, not skip)
pytestmark = pytest.mark.ros
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from ros2_s2dhm.errors import MapFormatError  # noqa: E402
from ros2_s2dhm.geometry.pose import Pose  # noqa: E402
from ros2_s2dhm.localizer import LocalizationResult, LocalizerConfig  # noqa: E402
from ros2_s2dhm.ros import localizer_node  # noqa: E402
from waiting import wait_for  # noqa: E402

W, H = 64, 48
TRUE_POSE = Pose.exp(np.array([0.1, -0.2, 0.3, 1.0, 2.0, 3.0]))
COVARIANCE = np.diag([1e-4, 2e-4, 3e-4, 1e-2, 2e-2, 3e-2])
FAIL_VALUE = 0  # an all-black frame makes the fake pipeline fail


class FakePipeline:
    """Stands in for Localizer's staged API: success unless the image is black (or, with
    fail_with_prior, a prior is given); records its calls and counts backbone passes."""

    def __init__(self, delay_s=0.0, fail_with_prior=False):
        self.delay_s = delay_s
        self.fail_with_prior = fail_with_prior
        self.calls = []
        self.budgets = []
        self.backbone_passes = 0

    def features(self, image, camera):
        self.backbone_passes += 1
        time.sleep(self.delay_s)
        return image

    def localize(self, image, camera, prior_center=None, prior_radius_m=None):
        return self.localize_features(self.features(image, camera), prior_center, prior_radius_m)

    def localize_features(self, image, prior_center=None, prior_radius_m=None,
                          time_budget_ms=None):
        self.calls.append((image.shape, prior_center, prior_radius_m))
        self.budgets.append(time_budget_ms)
        if int(image.max()) == FAIL_VALUE or (self.fail_with_prior and prior_center is not None):
            return LocalizationResult(success=False, failure_reason="too few inliers (fake)",
                                      num_matches=3, num_inliers=2,
                                      timings_ms={"total": 1.0})
        return LocalizationResult(
            success=True, pose=TRUE_POSE, pose_rpnp=TRUE_POSE, pose_fpnp=TRUE_POSE,
            covariance=COVARIANCE, num_matches=50, num_inliers=40, confidence=1.0,
            reference_names=["ref/0.jpg"], retrieval_scores=[0.9],
            timings_ms={"backbone": 5.0, "total": 10.0},
            inlier_keypoints=np.array([[10.0, 10.0]]), inlier_points3d=np.array([[0.0, 0.0, 5.0]]))


class Harness:
    """A localizer node + a client node spun by one executor thread."""

    def __init__(self, monkeypatch, pipeline=None, factory=None, **params):
        self.pipeline = pipeline or FakePipeline()
        monkeypatch.setattr(localizer_node, "PIPELINE_FACTORY",
                            factory or (lambda *args: self.pipeline))
        overrides = {"map_dir": "/fake/map", "device": "cpu", "warmup": False,
                     "diagnostics_period_s": 0.2, **params}
        self.node = localizer_node.LocalizerNode(
            parameter_overrides=[Parameter(k, value=v) for k, v in overrides.items()])
        self.client = rclpy.create_node(f"client_{random.randint(0, 10**6)}")
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.client.create_publisher(Image, "image", qos)
        self.compressed_pub = self.client.create_publisher(CompressedImage, "image/compressed", qos)
        self.info_pub = self.client.create_publisher(CameraInfo, "camera_info", qos)
        self.initialpose_pub = self.client.create_publisher(PoseWithCovarianceStamped,
                                                            "initialpose", 10)
        self.poses, self.diagnostics = [], []
        self.client.create_subscription(PoseWithCovarianceStamped, "/s2dhm_localizer/pose",
                                        self.poses.append, 100)
        self.client.create_subscription(DiagnosticArray, "/diagnostics",
                                        self.diagnostics.append, 100)
        self.executor = MultiThreadedExecutor(num_threads=3)
        self.executor.add_node(self.node)
        self.executor.add_node(self.client)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        assert wait_for(lambda: self.image_pub.get_subscription_count() > 0
                        or self.compressed_pub.get_subscription_count() > 0)
        assert wait_for(lambda: self.node.count_publishers("camera_info") > 0)

    def close(self):
        if self.thread is None:
            return
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        self.client.destroy_node()
        self.thread = None

    # --- inputs ---------------------------------------------------------------------------
    def send_info(self, k=(50.0, 0, 31.5, 0, 50.0, 23.5, 0, 0, 1), size=(W, H)):
        msg = CameraInfo()
        msg.width, msg.height = size
        msg.k = [float(v) for v in k]
        msg.distortion_model, msg.d = "plumb_bob", [0.0] * 5
        self.info_pub.publish(msg)
        time.sleep(0.15)

    def send_image(self, stamp_ns, value=128, size=(W, H), encoding="rgb8", data=None):
        msg = Image()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamp_ns), 10**9)
        msg.header.frame_id = "camera"
        msg.width, msg.height = size
        msg.encoding = encoding
        msg.step = size[0] * 3
        msg.data = (np.full((size[1], size[0], 3), value, np.uint8).tobytes()
                    if data is None else data)
        self.image_pub.publish(msg)
        return msg

    def call(self, service):
        client = self.client.create_client(Trigger, f"/s2dhm_localizer/{service}")
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(Trigger.Request())
        assert wait_for(future.done, 10.0)
        return future.result()

    # --- outputs --------------------------------------------------------------------------
    def status_after(self, count, level=None, contains="", stamp_ns=None):
        """Wait for a diagnostic status (published after message #count) matching level/text
        and, with ``stamp_ns``, about that frame (the timer republishes the last status)."""
        def find():
            for array in self.diagnostics[count:]:
                for status in array.status:
                    if ((level is None or status.level == level) and contains in status.message
                            and (stamp_ns is None
                                 or values(status).get("frame_stamp_ns") == str(stamp_ns))):
                        return status
            return None
        wait_for(lambda: find() is not None, 10.0)
        return find()




def values(status):
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture(scope="module", autouse=True)
def ros_context():
    rclpy.init()
    yield
    rclpy.shutdown()


@pytest.fixture
def harness(monkeypatch, request):
    made = []

    def make(**kwargs):
        made.append(Harness(monkeypatch, **kwargs))
        return made[-1]
    yield make
    for h in made:
        h.close()


def stamp_ns_of(msg):
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def test_pose_stamp_frame_and_covariance(harness):
    h = harness()
    h.send_info()
    n = len(h.diagnostics)
    h.send_image(1_417_176_458_999_821_000)
    assert wait_for(lambda: len(h.poses) == 1)
    pose = h.poses[0]
    assert stamp_ns_of(pose) == 1_417_176_458_999_821_000
    assert pose.header.frame_id == "map"
    p = pose.pose.pose.position
    assert np.allclose([p.x, p.y, p.z], TRUE_POSE.center)
    covariance = np.array(pose.pose.covariance).reshape(6, 6)
    assert np.all(np.diag(covariance) > 0)
    # ROS order: position block first; the fake's translation variances (1e-2..3e-2) are the
    # big ones, rotated into the map frame (trace is invariant under rotation)
    assert np.isclose(np.trace(covariance[:3, :3]), 6e-2, rtol=1e-3)
    assert np.isclose(np.trace(covariance[3:, 3:]), 6e-4, rtol=1e-3)
    status = h.status_after(n, DiagnosticStatus.OK, "localized")
    kv = values(status)
    assert kv["num_inliers"] == "40" and kv["map_loaded"] == "True"
    assert kv["latency_total_ms"] == "10.0" and kv["retrieval_score"] == "0.9000"
    assert kv["device"] == "cpu"


def test_failure_publishes_nothing(harness):
    h = harness()
    h.send_info()
    n = len(h.diagnostics)
    h.send_image(5_000, value=FAIL_VALUE)
    status = h.status_after(n, DiagnosticStatus.WARN, "localization failed")
    assert status is not None and "too few inliers" in status.message
    time.sleep(0.3)
    assert h.poses == []
    assert values(status)["localization_failures"] == "1"
    assert values(status)["confidence"] == "0.000"


def test_tracking_prior_failure_retries_without_a_second_backbone_pass(harness):
    h = harness(pipeline=FakePipeline(fail_with_prior=True))
    h.send_info()
    h.send_image(1_000)  # no prior yet: localized, tracking starts
    assert wait_for(lambda: len(h.poses) == 1)
    h.send_image(2_000)  # tracking prior fails, the retry without prior succeeds
    assert wait_for(lambda: len(h.poses) == 2)
    assert h.pipeline.backbone_passes == 2  # one per frame, not three
    priors = [call[1] is not None for call in h.pipeline.calls]
    assert priors == [False, True, False]


def test_time_budget_follows_the_recent_pipeline_time(harness):
    """After 5 frames each frame runs under latency_budget_factor x the median pipeline time
    (the fake reports 10 ms); an explicit time_budget_ms takes precedence; 0 turns it off."""
    h = harness(latency_budget_factor=2.0)
    h.send_info()
    for i in range(7):
        h.send_image(1_000 * (i + 1))
        assert wait_for(lambda: len(h.poses) == i + 1)
    assert h.pipeline.budgets == [None] * 5 + [20.0, 20.0]
    n = len(h.diagnostics)
    assert h.node.set_parameters([Parameter("time_budget_ms", value=500.0)])[0].successful
    h.send_image(8_000)
    assert wait_for(lambda: len(h.poses) == 8)
    assert h.pipeline.budgets[-1] is None  # the localizer's own 500 ms applies
    assert h.node.set_parameters([Parameter("time_budget_ms", value=0.0),
                                  Parameter("latency_budget_factor", value=0.0)])[0].successful
    h.send_image(9_000)
    assert wait_for(lambda: len(h.poses) == 9)
    assert h.pipeline.budgets[-1] is None
    status = h.status_after(n, contains="localized")
    assert status is not None and "time_budget_ms" in values(status)


def _bad_inputs():
    good = np.full((H, W, 3), 100, np.uint8).tobytes()
    return {
        "unknown_encoding": (dict(encoding="weird8", data=good), "weird8"),
        "zero_size": (dict(size=(0, 0), data=b""), "zero size"),
        "truncated": (dict(data=good[: len(good) // 2]), "truncated"),
        "size_mismatch": (dict(size=(W // 2, H), data=good[: len(good) // 2]), "camera"),
    }


@pytest.mark.parametrize("case", ["unknown_encoding", "zero_size", "truncated",
                                  "size_mismatch", "missing_camera_info", "nan_intrinsics"])
def test_bad_input_warns_and_node_keeps_working(harness, case):
    h = harness()
    n = len(h.diagnostics)
    if case == "missing_camera_info":
        h.send_image(1_000)
        expected = "CameraInfo"
    elif case == "nan_intrinsics":
        h.send_info(k=(float("nan"), 0, 31.5, 0, 50.0, 23.5, 0, 0, 1))
        h.send_image(1_000)
        expected = "CameraInfo.k"
    else:
        h.send_info()
        kwargs, expected = _bad_inputs()[case]
        h.send_image(1_000, **kwargs)
    status = h.status_after(n, DiagnosticStatus.WARN, expected)
    assert status is not None, f"no WARN diagnostic naming {expected!r}"
    assert status.message.startswith("bad input") and values(status)["frames_bad_input"] == "1"
    assert h.poses == []
    h.send_info()
    h.send_image(2_000)
    assert wait_for(lambda: len(h.poses) == 1), "node did not answer the next good frame"
    assert stamp_ns_of(h.poses[0]) == 2_000


def test_compressed_input_and_truncated_jpeg(harness):
    h = harness(use_compressed=True, image_qos="reliable")
    h.send_info()
    jpeg = cv2.imencode(".jpg", np.full((H, W, 3), 90, np.uint8))[1].tobytes()
    n = len(h.diagnostics)
    bad = CompressedImage(format="jpeg", data=jpeg[:40])
    bad.header.stamp.sec = 1
    h.compressed_pub.publish(bad)
    status = h.status_after(n, DiagnosticStatus.WARN, "CompressedImage")
    assert status is not None and "bad input" in status.message
    good = CompressedImage(format="jpeg", data=jpeg)
    good.header.stamp.sec = 2
    h.compressed_pub.publish(good)
    assert wait_for(lambda: len(h.poses) == 1)
    assert h.poses[0].header.stamp.sec == 2 and h.pipeline.calls[-1][0] == (H, W, 3)


def test_newest_frame_only_under_fast_input(harness):
    delay = 0.25
    h = harness(pipeline=FakePipeline(delay_s=delay))
    h.send_info()
    sent = 30
    start = time.monotonic()
    for i in range(sent):
        h.send_image(10**9 + i * 10**7)
        time.sleep(0.01)  # 100 Hz, processing runs at 4 Hz
    last_sent = time.monotonic()
    last_stamp = 10**9 + (sent - 1) * 10**7
    assert wait_for(lambda: h.poses and stamp_ns_of(h.poses[-1]) == last_stamp, 5.0)
    elapsed = time.monotonic() - start
    answered = time.monotonic() - last_sent
    time.sleep(0.3)
    processed = len(h.pipeline.calls)
    # one frame at a time, each taking `delay` (below: the frames between were dropped)
    assert processed <= elapsed / delay + 1 and len(h.poses) == processed
    # the newest frame was answered within ~2 processing times of being sent (the frame in
    # progress, then it): bounded latency, however long a busy machine took to send the 30
    assert answered < 2 * delay + 1.0
    n = len(h.diagnostics)
    stats = values(h.status_after(n, None, ""))  # a heartbeat after the last result
    # every frame that reached the callback was processed or replaced by a newer one (on a busy
    # machine a few never reach it: history depth 1, counted as lost)
    received = int(stats["frames_received"])
    assert int(stats["frames_dropped"]) >= received - processed - 1 > 0
    assert received + int(stats["frames_lost"]) == sent
    assert float(stats["latency_receive_to_result_ms"]) < 3 * 1e3 * delay
    print(f"\nfast input: sent {sent} at 100 Hz, processed {processed}, dropped "
          f"{stats['frames_dropped']}, newest answered {answered:.2f} s after it was sent")


def test_max_rate_and_stale_frames(harness):
    h = harness(max_rate_hz=2.0)
    h.send_info()
    for i in range(10):
        h.send_image(i * 10**8)
        time.sleep(0.1)
    time.sleep(0.3)
    assert 1 <= len(h.pipeline.calls) <= 3  # 1 s at 2 Hz
    h.close()
    h = harness(max_image_age_s=0.5)
    h.send_info()
    n = len(h.diagnostics)
    h.send_image(1_000)  # stamped 1970: far too old for the wall clock
    # a frame refused before localization still names its stamp in the status
    assert h.status_after(n, DiagnosticStatus.WARN, "old", stamp_ns=1_000) is not None
    assert h.poses == [] and h.pipeline.calls == []
    h.send_image(time.time_ns())
    assert wait_for(lambda: len(h.poses) == 1)


def test_tracking_prior_reset_and_initialpose(harness):
    h = harness(tracking_radius_m=7.0, prior_radius_m=30.0)
    h.send_info()
    h.send_image(1_000)
    assert wait_for(lambda: len(h.poses) == 1)
    assert h.pipeline.calls[0][1] is None  # first frame: global retrieval
    h.send_image(2_000)
    assert wait_for(lambda: len(h.poses) == 2)
    center, radius = h.pipeline.calls[1][1:]
    assert np.allclose(center, TRUE_POSE.center) and radius == 7.0
    # a failure under the tracking prior retries with global retrieval on the same frame
    h.send_image(3_000, value=FAIL_VALUE)
    assert wait_for(lambda: len(h.pipeline.calls) == 4)
    assert h.pipeline.calls[2][1] is not None and h.pipeline.calls[3][1] is None
    h.send_image(4_000)
    assert wait_for(lambda: len(h.pipeline.calls) == 5)
    assert h.pipeline.calls[4][1] is None  # tracking was dropped after the failure
    assert wait_for(lambda: len(h.poses) == 3)
    assert h.call("reset").success
    initial = PoseWithCovarianceStamped()
    initial.header.frame_id = "map"
    initial.pose.pose.position.x, initial.pose.pose.orientation.w = 12.0, 1.0
    h.initialpose_pub.publish(initial)
    time.sleep(0.3)
    h.send_image(5_000)
    assert wait_for(lambda: len(h.pipeline.calls) == 6)
    center, radius = h.pipeline.calls[5][1:]
    assert np.allclose(center, [12.0, 0, 0]) and radius == 30.0


def test_one_shot_trigger(harness):
    h = harness(continuous=False)
    h.send_info()
    h.send_image(1_000)
    time.sleep(0.4)
    assert h.poses == []
    response = h.call("trigger_localization")
    assert response.success and "armed" in response.message
    assert wait_for(lambda: len(h.poses) == 1)
    assert stamp_ns_of(h.poses[0]) == 1_000
    h.send_image(2_000)
    time.sleep(0.4)
    assert len(h.poses) == 1  # one shot only


def test_map_errors_and_reload(harness):
    state = {"fail": True}
    pipeline = FakePipeline()

    def factory(map_dir, weights, device, config):
        if state["fail"]:
            raise MapFormatError(f"no map at {map_dir}: manifest.json is missing")
        return pipeline
    h = harness(factory=factory, pipeline=pipeline)
    status = h.status_after(0, DiagnosticStatus.ERROR, "manifest.json")
    assert status is not None and values(status)["map_loaded"] == "False"
    h.send_info()
    h.send_image(1_000)
    time.sleep(0.3)
    assert h.poses == []
    response = h.call("reload_map")
    assert not response.success and "manifest.json" in response.message
    state["fail"] = False
    response = h.call("reload_map")
    assert response.success, response.message
    h.send_image(2_000)
    assert wait_for(lambda: len(h.poses) == 1)


def test_base_frame_pose_and_debug_image(harness):
    base_to_camera = [0.5, 0.0, 1.2, -np.pi / 2, 0.0, -np.pi / 2]
    h = harness(base_frame="base_link", base_to_camera=base_to_camera, publish_debug_image=True)
    debug = []
    h.client.create_subscription(Image, "/s2dhm_localizer/debug/matches", debug.append, 10)
    time.sleep(0.3)
    h.send_info()
    h.send_image(1_000)
    assert wait_for(lambda: len(h.poses) == 1 and len(debug) == 1)
    from ros2_s2dhm.ros.conversions import transform_from_xyz_rpy
    expected = TRUE_POSE.inverse() @ transform_from_xyz_rpy(base_to_camera).inverse()
    p = h.poses[0].pose.pose.position
    assert np.allclose([p.x, p.y, p.z], expected.t)
    assert debug[0].encoding == "rgb8" and (debug[0].width, debug[0].height) == (W, H)


def test_parameters_table_is_declared():
    assert set(localizer_node.PARAMETERS) >= {
        "map_dir", "weights", "device", "image_qos", "use_compressed", "continuous",
        "max_rate_hz", "max_image_age_s", "map_frame", "base_frame", "min_confidence",
        "tracking_radius_m", "prior_radius_m", "publish_debug_image"}


# ----------------------------------------------------------------------------- recorder

def test_frame_names(tmp_path):
    from ros2_s2dhm.errors import DatasetError
    from ros2_s2dhm.ros.pose_recorder import FrameNames

    assert FrameNames.from_format("rear/{stamp_us}.jpg").name(1_417_176_458_999_821_000) == \
        "rear/1417176458999821.jpg"
    listing = tmp_path / "names.txt"
    listing.write_text("# comment\n5000 a.png\nrear/1417176458999821.jpg PINHOLE 64 48 1 1 1 1\n"
                       "img_00122_c0_1303398474779487us.jpg\n")
    names = FrameNames.from_file(listing)
    assert names.name(5000) == "a.png"
    assert names.name(1_417_176_458_999_821_000) == "rear/1417176458999821.jpg"
    assert names.name(1_303_398_474_779_487_000) == "img_00122_c0_1303398474779487us.jpg"
    assert names.name(1) is None and len(names.expected) == 3
    listing.write_text("no_timestamp.jpg\n")
    with pytest.raises(DatasetError, match="names.txt:1"):
        FrameNames.from_file(listing)
    with pytest.raises(DatasetError, match="stamp_us"):
        FrameNames.from_format("{frame}.jpg")


def test_record_poses_writes_submission(harness, tmp_path):
    """record_poses (a separate process) writes the node's poses under the frames' names."""
    import subprocess
    import sys
    from pathlib import Path

    from ros2_s2dhm.datasets.submission import read_submission

    h = harness()
    h.send_info()
    out = tmp_path / "poses.txt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "offline_tools.record_poses", str(out),
         "--name-format", "rear/{stamp_us}.jpg", "--count", "2", "--timeout", "40"],
        cwd=Path(__file__).resolve().parents[1], env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert wait_for(lambda: h.node.count_subscribers("/s2dhm_localizer/pose") >= 2, 40.0)
        stamps = [1_417_176_458_999_821_000, 1_417_176_459_999_821_000]
        for stamp in stamps:
            h.send_image(stamp)
            time.sleep(0.2)
        h.send_image(1_417_176_460_000_000_000, value=FAIL_VALUE)  # a failure: absent
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    poses = read_submission(out)
    assert list(poses) == ["rear/1417176458999821.jpg", "rear/1417176459999821.jpg"], output
    for pose in poses.values():  # world-to-camera, exactly the pipeline's estimate
        assert np.allclose(pose.R, TRUE_POSE.R, atol=1e-9)
        assert np.allclose(pose.t, TRUE_POSE.t, atol=1e-9)


# ----------------------------------------------------------------------------- real pipeline

def test_unverifiable_frames_publish_nothing_and_say_why(harness, shipped_map):
    """Real pipeline: an unmapped place and a textureless frame never give a pose; a night frame of
    a mapped place gives one only when verified (confidence >= min_confidence, and then right)."""
    from ros2_s2dhm.datasets.base import read_image
    from ros2_s2dhm.datasets.synthetic.generate import street_pose
    from ros2_s2dhm.datasets.synthetic.render import render_view
    from ros2_s2dhm.datasets.synthetic.scene import make_scene
    from ros2_s2dhm.datasets.submission import read_submission
    from ros2_s2dhm.geometry.pose import pose_error

    map_dir, dataset = shipped_map
    h = harness(factory=localizer_node.build_pipeline, map_dir=str(map_dir), weights="default",
                tracking_enabled=False)
    camera = dataset.queries[0].camera
    fx, fy, cx, cy = camera.opencv_params()[:4]
    h.send_info(k=(fx, 0, cx, 0, fy, cy, 0, 0, 1), size=(camera.width, camera.height))
    night = next(q for q in dataset.queries if q.condition == "night")
    frames = {
        "unmapped place": render_view(make_scene(7, length=14.0), street_pose(5.0), camera)[0],
        "textureless": np.full((camera.height, camera.width, 3), 90, np.uint8),
        "night": read_image(night.path),
    }
    outcomes = {}
    for i, (what, image) in enumerate(frames.items()):
        n, poses = len(h.diagnostics), len(h.poses)
        h.send_image((i + 1) * 10**9, size=(camera.width, camera.height), data=image.tobytes())
        # "localized" or "localization failed", about this frame
        status = h.status_after(n, contains="locali", stamp_ns=(i + 1) * 10**9)
        assert status is not None, what
        time.sleep(0.3)
        outcomes[what] = (status, h.poses[poses:])
    for what in ("unmapped place", "textureless"):
        status, poses = outcomes[what]
        assert poses == [] and status.level == DiagnosticStatus.WARN, what
        assert "localization failed:" in status.message and len(status.message) > 25, status.message
    status, poses = outcomes["night"]
    kv = values(status)
    if poses:  # published: verified, confident and right
        assert float(kv["confidence"]) >= LocalizerConfig().min_confidence
        assert kv["pose_published"] == "True"
        truth = read_submission(dataset.root / "ground_truth.txt")[night.name]
        p = poses[0].pose.pose.position
        assert np.linalg.norm([p.x, p.y, p.z] - truth.center) < 5.0
    else:
        assert "localization failed:" in status.message and kv["pose_published"] == "False"
