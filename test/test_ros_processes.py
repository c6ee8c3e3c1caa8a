"""The node as its own process (real rclpy, loopback discovery, random domain) with the real
pipeline on a tiny map: start-up parameter rejection, parameters refused and applied at run
time, a failed ``~/reload_map`` visible on /diagnostics, the tracking prior's retry on the same
backbone pass (counted), and the lifecycle node's transitions.

Needs the synthetic generator, the map builder, ``ros/localizer_node.py``,
``ros/parameters.py`` and ``ros/lifecycle_node.py``.
"""
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from ros2_s2dhm.datasets.base import read_image  # noqa: E402
from ros2_s2dhm.datasets.robotcar import load_robotcar_seasons  # noqa: E402
from ros2_s2dhm.datasets.synthetic import generate_synthetic  # noqa: E402
from ros2_s2dhm.features.checkpoints import load_network  # noqa: E402
from ros2_s2dhm.map_builder import MapBuildConfig, build_reference_map  # noqa: E402
from ros2_s2dhm.ros.conversions import camera_to_camera_info  # noqa: E402

import waiting  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
NODE = "/s2dhm_localizer"


@pytest.fixture(scope="module")
def tiny_map(tmp_path_factory):
    """A tiny synthetic set and its map with the seeded random network (fast; plumbing only)."""
    root = tmp_path_factory.mktemp("processes")
    generate_synthetic(root / "data", seed=0, size="tiny", conditions=["night"])
    dataset = load_robotcar_seasons(root / "data")
    network, info = load_network(None, device="cpu")
    build_reference_map(dataset, network, info.sha256, info.kind, root / "map",
                        MapBuildConfig(image_size=128), device="cpu", progress=False)
    return dataset, root / "map"


class NodeProcess:
    """``python -m MODULE --ros-args ...`` on a random domain, its output collected by a thread."""

    def __init__(self, module: str, params: dict, domain: int):
        args = [sys.executable, "-m", module, "--ros-args"]
        for name, value in params.items():
            args += ["-p", f"{name}:={value}"]
        env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                   ROS_DOMAIN_ID=str(domain), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout),
                                        daemon=True)
        self._reader.start()

    def text(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 120.0) -> bool:
        return wait_for(lambda: text in self.text() or self.proc.poll() is not None, timeout) \
            and text in self.text()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=10)
        return self.text()


def wait_for(predicate, timeout=30.0):
    return waiting.wait_for(predicate, timeout, poll=0.05)


class Client:
    """Publishes images + CameraInfo, collects poses and diagnostics, calls services."""

    def __init__(self, domain: int):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(f"client_{random.randint(0, 10**6)}", context=self.context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.image_pub = self.node.create_publisher(Image, "image", qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", qos)
        self.poses, self.diagnostics = [], []
        self.node.create_subscription(PoseWithCovarianceStamped, f"{NODE}/pose",
                                      self.poses.append, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 100)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=10)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)

    def call(self, srv_type, name, request, timeout=60.0):
        client = self.node.create_client(srv_type, name)
        assert client.wait_for_service(timeout_sec=30.0), f"no service {name}"
        future = client.call_async(request)
        assert wait_for(future.done, timeout), f"{name}: no answer"
        self.node.destroy_client(client)
        return future.result()

    def set_parameter(self, name, value):
        request = SetParameters.Request(parameters=[Parameter(name, value=value).to_parameter_msg()])
        return self.call(SetParameters, f"{NODE}/set_parameters", request).results[0]

    def send(self, image: np.ndarray, camera, stamp_ns: int):
        """One frame: CameraInfo then the image, both stamped stamp_ns."""
        info = camera_to_camera_info(camera)
        msg = Image()
        msg.header.frame_id = info.header.frame_id = "camera"
        for m in (info, msg):
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(int(stamp_ns), 10**9)
        msg.width, msg.height, msg.encoding = camera.width, camera.height, "rgb8"
        msg.step = camera.width * 3
        msg.data = np.ascontiguousarray(image).tobytes()
        self.info_pub.publish(info)
        time.sleep(0.1)
        self.image_pub.publish(msg)

    def wait_for_subscriber(self):
        assert wait_for(lambda: self.image_pub.get_subscription_count() > 0, 60.0)
        time.sleep(0.5)  # let the subscription match this publisher too

    def last_status(self, after: int, predicate, timeout=30.0):
        """The first /diagnostics status after message #after whose values satisfy predicate."""
        def find():
            for array in self.diagnostics[after:]:
                for status in array.status:
                    if predicate({kv.key: kv.value for kv in status.values}, status):
                        return status
            return None
        wait_for(lambda: find() is not None, timeout)
        return find()


def values(status):
    return {kv.key: kv.value for kv in status.values}


@pytest.fixture
def domain():
    return random.randint(101, 230)


def test_invalid_parameters_at_start_up_exit_with_the_reason(domain):
    for params, expected in (({"top_k": -1}, "top_k=-1 is outside [1, inf)"),
                             ({"top_k": "abc"}, "top_k"),
                             ({"image_qos": "fast"}, "not one of"),
                             ({"verification_coverage_low": 0.5}, "low < high")):
        node = NodeProcess("ros2_s2dhm.ros.localizer_node", params, domain)
        try:
            node.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{params}: the node kept running:\n{node.stop()}")
        out = node.stop()
        assert node.proc.returncode == 1, f"{params}: exit {node.proc.returncode}\n{out}"
        assert "invalid parameter" in out and expected in out, f"{params}:\n{out}"
        assert "Traceback" not in out, f"{params}:\n{out}"


def test_running_node_parameters_reload_and_retry(tiny_map, tmp_path, domain):
    dataset, map_dir = tiny_map
    node = NodeProcess("ros2_s2dhm.ros.localizer_node",
                       {"map_dir": map_dir, "weights": "random", "device": "cpu",
                        "use_ratio_test": "false", "image_qos": "reliable",
                        "tracking_radius_m": 1e-9, "diagnostics_period_s": 0.5}, domain)
    client = Client(domain)
    try:
        assert node.wait_for_output("ready:"), node.text()
        client.wait_for_subscriber()

        # refused at run time with the reason; read-only; a good value applies
        result = client.set_parameter("top_k", 0)
        assert not result.successful and "outside" in result.reason
        result = client.set_parameter("refine_loss", "l7")
        assert not result.successful and "not one of" in result.reason
        result = client.set_parameter("image_qos", "reliable")
        assert not result.successful and "read-only" in result.reason.lower()
        assert client.set_parameter("pnp_backend", "opencv").successful
        assert wait_for(lambda: "pnp_backend='opencv'" in node.text()), node.text()

        # two frames of different places: the second's tracking prior (radius 1e-9) holds no
        # reference, the retry without it localizes, on the same backbone pass
        camera = dataset.queries[0].camera
        frames = [read_image(ref.path) for ref in dataset.references[2:5:2]]
        n = len(client.diagnostics)
        for i, image in enumerate(frames):
            client.send(image, camera, (i + 1) * 10**9)
            assert wait_for(lambda: len(client.poses) == i + 1, 60.0), node.text()
        status = client.last_status(n, lambda v, s: v.get("frames_processed") == "2"
                                    and v.get("retrieval_prior") is not None)
        assert status is not None, node.text()
        v = values(status)
        assert v["retrieval_prior"] == "retrieval (tracking prior failed)", v
        assert v["backbone_passes"] == v["frames_processed"] == "2", v

        # a failed reload: ERROR that names the map still serving, not the requested one
        assert client.set_parameter("map_dir", str(tmp_path / "nowhere")).successful
        response = client.call(Trigger, f"{NODE}/reload_map", Trigger.Request())
        assert not response.success and "nowhere" in response.message
        n = len(client.diagnostics)
        status = client.last_status(n, lambda v, s: True)
        assert status.level == DiagnosticStatus.ERROR, status
        v = values(status)
        assert v["map_in_use"] == str(map_dir) and "nowhere" in v["map_dir"], v
        assert "still serving" in status.message and str(map_dir) in status.message
        client.send(frames[0], camera, 5 * 10**9)  # and it still serves
        assert wait_for(lambda: len(client.poses) == 3, 60.0), node.text()
    finally:
        client.close()
        out = node.stop()
    assert "Traceback" not in out, out


def _transition(client, transition_id):
    request = ChangeState.Request()
    request.transition.id = transition_id
    return client.call(ChangeState, f"{NODE}/change_state", request).success


def _state(client):
    return client.call(GetState, f"{NODE}/get_state", GetState.Request()).current_state.id


def test_lifecycle_transitions(tiny_map, tmp_path, domain):
    dataset, map_dir = tiny_map
    node = NodeProcess("ros2_s2dhm.ros.lifecycle_node",
                       {"map_dir": tmp_path / "missing", "weights": "random", "device": "cpu",
                        "use_ratio_test": "false", "image_qos": "reliable"}, domain)
    client = Client(domain)
    camera = dataset.queries[0].camera
    image = read_image(dataset.references[3].path)
    try:
        assert wait_for(lambda: client.node.count_publishers("/rosout") > 0
                        and _services_up(client), 60.0), node.text()
        assert _state(client) == State.PRIMARY_STATE_UNCONFIGURED
        # a map that cannot be loaded fails configure, with the reason in the log
        assert not _transition(client, Transition.TRANSITION_CONFIGURE)
        assert _state(client) == State.PRIMARY_STATE_UNCONFIGURED
        assert "missing" in node.text() and "configure failed" in node.text()

        assert client.set_parameter("map_dir", str(map_dir)).successful
        assert _transition(client, Transition.TRANSITION_CONFIGURE)
        assert _state(client) == State.PRIMARY_STATE_INACTIVE
        client.wait_for_subscriber()
        client.send(image, camera, 10**9)  # inactive: nothing is localized
        time.sleep(2.0)
        assert client.poses == []

        assert _transition(client, Transition.TRANSITION_ACTIVATE)
        assert _state(client) == State.PRIMARY_STATE_ACTIVE
        client.send(image, camera, 2 * 10**9)
        assert wait_for(lambda: len(client.poses) == 1, 60.0), node.text()

        assert _transition(client, Transition.TRANSITION_DEACTIVATE)
        assert _state(client) == State.PRIMARY_STATE_INACTIVE
        client.send(image, camera, 3 * 10**9)
        time.sleep(2.0)
        assert len(client.poses) == 1

        assert _transition(client, Transition.TRANSITION_CLEANUP)
        assert _state(client) == State.PRIMARY_STATE_UNCONFIGURED
        assert wait_for(lambda: client.image_pub.get_subscription_count() == 0, 10.0)
        assert "pipeline and interfaces released" in node.text()

        # configure + activate again: it localizes again
        assert _transition(client, Transition.TRANSITION_CONFIGURE)
        assert _transition(client, Transition.TRANSITION_ACTIVATE)
        client.wait_for_subscriber()
        client.send(image, camera, 4 * 10**9)
        assert wait_for(lambda: len(client.poses) == 2, 60.0), node.text()
    finally:
        client.close()
        out = node.stop()
    assert "Traceback" not in out, out


def _services_up(client) -> bool:
    names = {name for name, _ in client.node.get_service_names_and_types()}
    return f"{NODE}/change_state" in names and f"{NODE}/get_state" in names


#: lifecycle transitions that lead to each state (after a configure that failed on a missing map)
_WALKS = {
    "unconfigured after a failed configure": [],
    "inactive": [Transition.TRANSITION_CONFIGURE],
    "active": [Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE],
    "unconfigured after cleanup": [
        Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE,
        Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP],
    "finalized": [Transition.TRANSITION_CONFIGURE,
                  Transition.TRANSITION_INACTIVE_SHUTDOWN],
}
STOP_WITHIN_S = 10.0


@pytest.mark.parametrize("state, signum", [
    ("unconfigured after a failed configure", signal.SIGTERM),
    ("inactive", signal.SIGINT),
    ("active", signal.SIGTERM),
    ("unconfigured after cleanup", signal.SIGINT),
    ("unconfigured after cleanup", signal.SIGTERM),
    ("finalized", signal.SIGINT),
])
def test_managed_node_stops_on_signal_in_every_state(tiny_map, tmp_path, domain, state, signum):
    """Driven as a lifecycle manager drives it, then SIGINT/SIGTERM: exit 0 within 10 s, no
    traceback (a cleaned-up node has no timer left to wake its executor)."""
    _dataset, map_dir = tiny_map
    node = NodeProcess("ros2_s2dhm.ros.lifecycle_node",
                       {"map_dir": tmp_path / "missing", "weights": "random", "device": "cpu",
                        "warmup": "false"}, domain)
    client = Client(domain)
    try:
        assert wait_for(lambda: _services_up(client), 60.0), node.text()
        assert not _transition(client, Transition.TRANSITION_CONFIGURE)
        assert client.set_parameter("map_dir", str(map_dir)).successful
        for transition in _WALKS[state]:
            assert _transition(client, transition), f"{state}: transition {transition}\n{node.text()}"
    finally:
        client.close()
    time.sleep(1.0)  # idle in that state
    _stops_cleanly(node, signum, state)


def _stops_cleanly(node: "NodeProcess", signum, what: str) -> None:
    """``signum`` to the node: it exits 0 within STOP_WITHIN_S, without a traceback."""
    start = time.monotonic()
    node.proc.send_signal(signum)
    try:
        code = node.proc.wait(timeout=STOP_WITHIN_S)
    except subprocess.TimeoutExpired:
        node.proc.kill()
        pytest.fail(f"{what}: still running {STOP_WITHIN_S} s after {signum.name}\n{node.stop()}")
    out = node.stop()
    assert code == 0 and "Traceback" not in out, out
    print(f"{what}: stopped {time.monotonic() - start:.2f} s after {signum.name}")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_plain_node_without_map_stops_on_signal(tmp_path, domain, signum):
    """The plain node with no map (nothing loaded) stops on SIGINT/SIGTERM too."""
    node = NodeProcess("ros2_s2dhm.ros.localizer_node",
                       {"map_dir": tmp_path / "missing", "weights": "random", "device": "cpu",
                        "diagnostics_period_s": 0.0}, domain)
    assert node.wait_for_output("ready:", 60.0), node.stop()
    _stops_cleanly(node, signum, "plain node without a map")


FULL_SIZE = (640, 480)  # 0.9 MB rgb8: larger than Fast DDS's default segment and socket buffer


@pytest.mark.parametrize("frames", [6])
def test_full_size_best_effort_frames_reach_an_idle_node(tiny_map, domain, frames):
    """A camera driver at its defaults (best-effort, this process's default transport) sends
    full-size frames slowly to the node at its defaults: every frame reaches its callback.
    (Fast DDS's defaults delivered none of them: see ros2_s2dhm/ros/transport.py.)"""
    import cv2  # noqa: PLC0415
    from rclpy.qos import qos_profile_sensor_data  # noqa: PLC0415

    dataset, map_dir = tiny_map
    query = dataset.queries[0]
    width, height = FULL_SIZE
    camera = query.camera.scaled(width / query.camera.width, height / query.camera.height,
                                 width, height)
    image = cv2.resize(read_image(query.path), FULL_SIZE, interpolation=cv2.INTER_LINEAR)
    node = NodeProcess("ros2_s2dhm.ros.localizer_node",
                       {"map_dir": map_dir, "weights": "random", "device": "cpu"}, domain)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain)
    driver = rclpy.create_node("camera_driver", context=context)
    try:
        image_pub = driver.create_publisher(Image, "image", qos_profile_sensor_data)
        info_pub = driver.create_publisher(CameraInfo, "camera_info", qos_profile_sensor_data)
        assert node.wait_for_output("ready:", 120.0), node.stop()
        assert wait_for(lambda: image_pub.get_subscription_count() > 0, 60.0), node.stop()
        time.sleep(1.0)  # the node's subscription matches this publisher too
        info = camera_to_camera_info(camera, frame_id="camera")
        msg = Image(width=width, height=height, encoding="rgb8", step=width * 3)
        msg.header.frame_id = "camera"
        msg.data = image.tobytes()
        for i in range(frames):
            for m in (info, msg):
                m.header.stamp.sec, m.header.stamp.nanosec = 1 + i, 0
            info_pub.publish(info)
            image_pub.publish(msg)
            time.sleep(1.0)  # slower than the node: nothing is dropped for being busy
        time.sleep(2.0)
    finally:
        driver.destroy_node()
        rclpy.try_shutdown(context=context)
        out = node.stop()
    counts = [line for line in out.splitlines() if "frames: frames_received" in line]
    assert counts, out
    received = int(counts[-1].split("frames_received ")[1].split(",")[0])
    assert received == frames, f"{received} of {frames} full-size frames reached the node\n{out}"
    assert "transport: camera frames" in out, out
