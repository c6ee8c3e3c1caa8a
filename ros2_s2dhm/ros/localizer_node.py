"""ROS 2 nodes ``s2dhm_localizer``: thin shells over :class:`ros2_s2dhm.localizer.Localizer`.

Two forms with the same topics, services and parameters:

* :class:`LocalizerNode` (``localizer_node``): loads the map at start-up and runs;
* :class:`LifecycleLocalizerNode` (``lifecycle_localizer_node``), managed as nav2's
  localization nodes are: ``configure`` loads weights and map (a map that cannot be loaded fails
  the transition with the reason), ``activate`` starts localizing and publishing, ``deactivate``
  stops it, ``cleanup`` releases the pipeline and the interfaces.

Topics (relative names; remap them):
  sub ``image`` (sensor_msgs/Image) or, with ``use_compressed``, ``<image>/compressed``
      (sensor_msgs/CompressedImage; image_transport naming, so remapping ``image`` moves both),
      ``camera_info`` (sensor_msgs/CameraInfo), ``initialpose`` (PoseWithCovarianceStamped prior)
  pub ``~/pose`` (PoseWithCovarianceStamped), ``/diagnostics`` (DiagnosticArray),
      ``~/debug/matches`` (Image, optional), TF ``map_frame -> camera/base`` (when tf2_ros exists)
Services (std_srvs/Trigger): ``~/reload_map``, ``~/reset``, ``~/trigger_localization``.

Latency is bounded by one pipeline time: the image subscription keeps one message (history
depth 1), the callback only swaps it into a one-frame slot and a worker thread localizes the
newest frame; frames replaced in the slot are counted as dropped, frames that never reached
the callback as lost (from the gaps between header stamps). Every frame is localized from one
backbone pass (a failed tracking prior retries retrieval on the same features).

Parameters: :data:`ros2_s2dhm.ros.parameters.PARAMETERS` (the node's own and every localizer
option, checked when declared or set; ``config/localize.yaml`` is generated from it).

Run without ``ros2 launch``:
  ``localizer_node --ros-args --params-file config/localize.yaml -p map_dir:=/path/map``
"""
from __future__ import annotations

import collections
import dataclasses
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data, qos_profile_system_default
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from ros2_s2dhm.errors import CameraError, S2DHMError
from ros2_s2dhm.options import OptionError, localizer_config
from ros2_s2dhm.latency_budget import AdaptiveBudget
from ros2_s2dhm.ros import conversions as conv
from ros2_s2dhm.ros.parameters import (LOCALIZER, NODE_NAME, PARAMETERS, check_values, descriptor,
                                       localizer_values)
from ros2_s2dhm.ros.process import SIGNAL_POLL_S, init_ros
from ros2_s2dhm.ros.transport import apply_transport, socket_buffer_warning
from ros2_s2dhm.runtime import build_localizer, resolve_device

__all__ = ["LocalizerNode", "LifecycleLocalizerNode", "PARAMETERS", "NODE_NAME", "build_pipeline",
           "main", "lifecycle_main"]

#: Seconds over which /diagnostics reports the receive and processing rates.
RATE_WINDOW_S = 5.0


def build_pipeline(map_dir: str, weights: str, device: str, config: dict):
    """The real pipeline, assembled as the offline tools do (:func:`runtime.build_localizer`).

    ``config``: flat localizer options (``top_k``, ``image_size``, ``use_ratio_test``, ...).
    Returns an object with ``localize(image, camera, prior_center, prior_radius_m)``.
    Raises S2DHMError subclasses (MapFormatError, CheckpointError) for bad files.
    """
    return build_localizer(map_dir, weights, device, **config)[0]


#: Factory used by the node; tests may replace it with a fake of the same signature.
PIPELINE_FACTORY = build_pipeline


@dataclass
class _Frame:
    msg: object
    received: float  # time.monotonic()
    decode_ms: float = 0.0  # message -> RGB array (JPEG decoding for CompressedImage)
    budget_ms: float | None = None  # the adaptive time budget it ran under (None: none)


@dataclass
class _Stats:
    frames_received: int = 0
    frames_lost: int = 0       # never reached the callback (gaps between header stamps)
    frames_processed: int = 0
    frames_dropped: int = 0    # replaced in the slot while the worker was busy
    frames_stale: int = 0
    frames_bad_input: int = 0
    localization_failures: int = 0
    poses_published: int = 0
    backbone_passes: int = 0


class _Rates:
    """Receive/processing rates over a sliding window and frames lost before the callback.

    Lost frames are counted from header stamps: the nominal period is the smallest positive
    stamp difference among the last 50, and a gap of ``n`` periods means ``n - 1`` frames never
    arrived. This assumes a camera that stamps frames at a fixed rate; stamps with jitter
    (software stamping on a busy machine) are overcounted.
    """

    def __init__(self, window_s: float = RATE_WINDOW_S):
        self.window_s = window_s
        self.received = collections.deque()
        self.processed = collections.deque()
        self.periods = collections.deque(maxlen=50)
        self.last_stamp_ns: int | None = None

    def on_receive(self, now: float, stamp_ns: int) -> int:
        """Record a frame; returns how many frames went missing just before it."""
        self.received.append(now)
        lost = 0
        if self.last_stamp_ns is not None and stamp_ns > self.last_stamp_ns:
            gap = stamp_ns - self.last_stamp_ns
            self.periods.append(gap)
            period = min(self.periods)
            lost = max(0, int(round(gap / period)) - 1)
        if self.last_stamp_ns is None or stamp_ns > self.last_stamp_ns:
            self.last_stamp_ns = stamp_ns
        return lost

    def on_processed(self, now: float) -> None:
        self.processed.append(now)

    def hz(self, now: float) -> tuple[float, float]:
        """(receive rate, processing rate) in Hz over the window."""
        for times in (self.received, self.processed):
            while times and now - times[0] > self.window_s:
                times.popleft()
        return len(self.received) / self.window_s, len(self.processed) / self.window_s


def _tf_broadcaster_or_none(node: Node):
    try:
        from tf2_ros import TransformBroadcaster  # noqa: PLC0415
    except ImportError:
        return None
    return TransformBroadcaster(node)


class _LocalizerBehaviour:
    """Everything the two node forms share (``self`` is also an rclpy Node)."""

    # ------------------------------------------------------------------ parameters and state

    def _init_localizer(self) -> None:
        self._cond = threading.Condition()          # slot, counters, priors
        self._pipeline_lock = threading.Lock()      # one localization at a time
        self._stop = threading.Event()
        self._pending: _Frame | None = None
        self._armed = False
        self._active = False
        self._last_start = -np.inf
        self._stats = _Stats()
        self._rates = _Rates()
        self._budget = AdaptiveBudget(PARAMETERS["latency_budget_factor"].default)
        self._last_pose_time: float | None = None
        self._pipeline = None
        self._map_in_use: str | None = None
        self._map_error = "map_dir is not set"
        self._reload_error: str | None = None
        self._device = "cpu"
        self._camera = None
        self._camera_problem = "no CameraInfo received yet on 'camera_info'"
        self._camera_received = threading.Event()
        self._tracking_center: np.ndarray | None = None
        self._initial_center: np.ndarray | None = None
        self._last_log: tuple[str, float] = ("", 0.0)
        self._status = (DiagnosticStatus.ERROR, "starting", {})
        self._frame_in_camera = None
        self._interfaces: list = []
        self._worker = None
        self._tf = self._debug_pub = self._pose_pub = self._diag_pub = None
        self._p = {name: opt.default for name, opt in PARAMETERS.items()}
        self._declaring = True
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        for name, opt in PARAMETERS.items():
            self.declare_parameter(name, opt.default, descriptor(opt))
        self._declaring = False
        try:  # the localizer options together (one at a time they were checked alone)
            localizer_config(**localizer_values(self._p))
        except OptionError as exc:
            raise InvalidParameterValueException("localizer options", "", str(exc)) from exc

    def _check_parameters(self, params) -> SetParametersResult:
        """Reject a value out of range / not a choice / refused by the localizer config."""
        changes = {p.name: p.value for p in params if p.name in PARAMETERS}
        try:
            if self._declaring:
                for name, value in changes.items():
                    PARAMETERS[name].check(value)
            else:
                check_values(self._p, changes)
        except OptionError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, params) -> None:
        """Accepted values take effect: localizer options on the running pipeline at once."""
        changes = {p.name: PARAMETERS[p.name].check(p.value) for p in params
                   if p.name in PARAMETERS}
        self._p.update(changes)
        if self._declaring or not any(name in LOCALIZER for name in changes):
            return
        config = localizer_config(**self._localizer_options())
        with self._pipeline_lock:
            if self._pipeline is not None and hasattr(self._pipeline, "configure"):
                self._pipeline.configure(config)
        self.get_logger().info("localizer options set: " + ", ".join(
            f"{name}={value!r}" for name, value in changes.items() if name in LOCALIZER))

    def _localizer_options(self) -> dict:
        """The localizer options of the parameters (0 image_size: the map's)."""
        return localizer_values(self._p)

    def _image_qos(self) -> QoSProfile:
        """The chosen profile with history depth 1: an unread frame is replaced by a newer one."""
        profiles = {"sensor_data": qos_profile_sensor_data, "reliable": QoSProfile(depth=1),
                    "system_default": qos_profile_system_default}
        qos = profiles[self._p["image_qos"]]
        return QoSProfile(history=qos.history, depth=1, reliability=qos.reliability,
                          durability=qos.durability)

    def _configure_frames(self) -> None:
        """Pose of the published frame in the camera (None: the camera itself)."""
        self._frame_in_camera = None
        if not self._p["base_frame"]:
            return
        try:
            base_to_camera = conv.transform_from_xyz_rpy(self._p["base_to_camera"])
        except ValueError as exc:
            self.get_logger().error(f"parameter base_to_camera: {exc}; publishing the camera pose")
            return
        self._frame_in_camera = base_to_camera.inverse()

    def _camera_from_parameters(self) -> None:
        try:
            self._camera = conv.camera_from_parameters(
                self._p["camera_model"], self._p["camera_width"], self._p["camera_height"],
                self._p["camera_params"])
            self._camera_problem = None
        except CameraError as exc:
            self._camera_problem = f"camera_* parameters: {exc}"
            self.get_logger().error(self._camera_problem)

    # ------------------------------------------------------------------ map

    def reload_map(self) -> tuple[bool, str]:
        """(Re)load map + weights from the current parameters; keeps the old pipeline on error."""
        requested = self._p["map_dir"]
        if not requested:
            error = "parameter map_dir is empty: no map loaded; set it and call ~/reload_map"
            return self._reload_failed(error)
        start = time.perf_counter()
        try:
            device = resolve_device(self._p["device"])
            pipeline = PIPELINE_FACTORY(requested, self._p["weights"], device,
                                        self._localizer_options())
        except (S2DHMError, OSError, ValueError, RuntimeError) as exc:
            return self._reload_failed(f"cannot load map {requested!r}: {exc}")
        if self._p["warmup"]:
            self._warm_up(pipeline)
        with self._pipeline_lock:
            self._pipeline, self._device = pipeline, device
            self._map_in_use, self._map_error, self._reload_error = requested, None, None
        with self._cond:
            self._tracking_center = None
        message = f"map {requested!r} loaded on {device} in {time.perf_counter() - start:.1f} s"
        self.get_logger().info(message)
        self._set_status(DiagnosticStatus.OK, message, {})
        return True, message

    def _reload_failed(self, error: str) -> tuple[bool, str]:
        """ERROR on /diagnostics naming the map still in use (if any) until a reload succeeds."""
        if self._pipeline is None:
            self._map_error = error
        else:
            error += f"; still serving map {self._map_in_use!r}"
        self._reload_error = error
        self.get_logger().error(error)
        self._set_status(DiagnosticStatus.ERROR, error, {})
        return False, error

    def _release_pipeline(self) -> None:
        with self._pipeline_lock:
            self._pipeline, self._map_in_use = None, None
            self._map_error = "released (cleanup)"

    def _warm_up(self, pipeline) -> None:
        """One dummy query so lazy initialisation (cuDNN, allocators) is not paid by frame 1."""
        from ros2_s2dhm.geometry.camera import Camera  # noqa: PLC0415

        width, height = 160, 120
        camera = Camera.from_pinhole(100.0, 100.0, width / 2 - 0.5, height / 2 - 0.5, width, height)
        try:
            pipeline.localize(np.full((height, width, 3), 127, np.uint8), camera, None, None)
        except Exception as exc:  # a warm-up failure is not fatal
            self.get_logger().warning(f"warm-up pass failed: {exc}")

    # ------------------------------------------------------------------ interfaces

    def _create_interfaces(self, pose_publisher) -> None:
        """Publishers, services, subscriptions, the heartbeat and the worker thread."""
        self._stop.clear()
        self._configure_frames()
        self._pose_pub = pose_publisher(PoseWithCovarianceStamped, "~/pose", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._debug_pub = (self.create_publisher(Image, "~/debug/matches", 1)
                           if self._p["publish_debug_image"] else None)
        if self._tf is None and self._p["publish_tf"]:  # one broadcaster for the node's life
            self._tf = _tf_broadcaster_or_none(self)
        if self._p["publish_tf"] and self._tf is None:
            self.get_logger().info("tf2_ros is not importable: TF broadcasting is off "
                                   "(the pose is still published on ~/pose)")
        services = ReentrantCallbackGroup()
        made = [self._pose_pub, self._diag_pub, self._debug_pub]
        made += [self.create_service(Trigger, "~/reload_map", self._on_reload,
                                     callback_group=services),
                 self.create_service(Trigger, "~/reset", self._on_reset, callback_group=services),
                 self.create_service(Trigger, "~/trigger_localization", self._on_trigger,
                                     callback_group=services)]
        qos = self._image_qos()
        inputs = MutuallyExclusiveCallbackGroup()
        if self._p["use_camera_info"]:
            made.append(self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                 qos, callback_group=inputs))
        else:
            self._camera_from_parameters()
        made.append(self.create_subscription(PoseWithCovarianceStamped, "initialpose",
                                             self._on_initialpose, 10, callback_group=inputs))
        if self._p["use_compressed"]:  # image_transport naming: <image topic>/compressed
            self._image_topic = self.resolve_topic_name("image") + "/compressed"
            made.append(self.create_subscription(CompressedImage, self._image_topic,
                                                 self._on_image, qos, callback_group=inputs))
        else:
            self._image_topic = self.resolve_topic_name("image")
            made.append(self.create_subscription(Image, "image", self._on_image, qos,
                                                 callback_group=inputs))
        period = self._p["diagnostics_period_s"]
        if period > 0:
            made.append(self.create_timer(period, self._publish_diagnostics))
        self._interfaces = [m for m in made if m is not None]
        self._worker = threading.Thread(target=self._worker_loop, name="s2dhm_worker",
                                        daemon=True)
        self._worker.start()

    def _destroy_interfaces(self) -> None:
        """Stop the worker and destroy what :meth:`_create_interfaces` made."""
        self._stop.set()
        with self._cond:
            self._pending = None
            self._cond.notify_all()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=30.0)
        self._worker = None
        for entity in self._interfaces:
            self._destroy_entity(entity)
        self._interfaces = []
        self._debug_pub = self._pose_pub = self._diag_pub = None

    def _destroy_entity(self, entity) -> None:
        """Destroy through the node, which also forgets it (the executor must not wait on it)."""
        from rclpy.publisher import Publisher  # noqa: PLC0415
        from rclpy.service import Service  # noqa: PLC0415
        from rclpy.subscription import Subscription  # noqa: PLC0415
        from rclpy.timer import Timer  # noqa: PLC0415

        if isinstance(entity, Timer):
            self.destroy_timer(entity)
        elif isinstance(entity, Subscription):
            self.destroy_subscription(entity)
        elif isinstance(entity, Service):
            self.destroy_service(entity)
        elif isinstance(entity, Publisher):
            if hasattr(self, "destroy_lifecycle_publisher") and hasattr(entity, "on_activate"):
                self.destroy_lifecycle_publisher(entity)
            else:
                self.destroy_publisher(entity)

    def _log_ready(self) -> None:
        self.get_logger().info(
            f"ready: {self._image_topic} (qos {self._p['image_qos']}, depth 1), device "
            f"{self._device}, decoder {conv.image_backend()}, map "
            f"{repr(self._map_in_use) if self._pipeline else 'NOT loaded'}")

    def _log_counts(self) -> None:
        self.get_logger().info("frames: " + ", ".join(
            f"{name} {value}" for name, value in vars(self._stats).items()))

    # ------------------------------------------------------------------ callbacks

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self._camera = conv.camera_info_to_camera(msg, self._p["use_rectified_intrinsics"])
            self._camera_problem = None
        except CameraError as exc:
            self._camera = None
            self._camera_problem = f"invalid CameraInfo: {exc}"
        self._camera_received.set()  # after the camera is set: a waiting frame reads it

    def _on_image(self, msg) -> None:
        if not self._active:
            return
        now = time.monotonic()
        with self._cond:
            self._stats.frames_received += 1
            self._stats.frames_lost += self._rates.on_receive(
                now, conv.stamp_to_ns(msg.header.stamp))
            if self._pending is not None and (self._p["continuous"] or self._armed):
                self._stats.frames_dropped += 1
            self._pending = _Frame(msg, now)
            self._cond.notify()

    def _on_initialpose(self, msg: PoseWithCovarianceStamped) -> None:
        if msg.header.frame_id and msg.header.frame_id != self._p["map_frame"]:
            self.get_logger().warning(f"initialpose in frame {msg.header.frame_id!r} ignored: "
                                      f"expected {self._p['map_frame']!r}")
            return
        try:
            pose = conv.ros_pose_to_world_to_camera(msg.pose.pose, self._frame_in_camera)
        except ValueError as exc:
            self.get_logger().warning(f"initialpose ignored: {exc}")
            return
        with self._cond:
            self._initial_center = pose.center
            self._tracking_center = None
        self.get_logger().info(f"retrieval prior: within {self._p['prior_radius_m']} m of "
                               f"{np.round(pose.center, 2).tolist()}")

    def _on_reload(self, _request, response):
        response.success, response.message = self.reload_map()
        return response

    def _on_reset(self, _request, response):
        with self._cond:
            self._tracking_center = None
            self._initial_center = None
        response.success, response.message = True, "tracking and initialpose priors cleared"
        return response

    def _on_trigger(self, _request, response):
        if self._p["continuous"]:
            response.success = True
            response.message = "continuous mode: every frame is localized"
            return response
        with self._cond:
            self._armed = True
            self._cond.notify()
        response.success = True
        response.message = "armed: the newest frame will be localized"
        return response

    # ------------------------------------------------------------------ worker

    def _next_frame(self) -> _Frame | None:
        with self._cond:
            while not self._stop.is_set():
                ready = self._pending is not None and (self._p["continuous"] or self._armed)
                wait = 0.1
                if ready:
                    rate = self._p["max_rate_hz"]
                    wait = self._last_start + (1.0 / rate if rate > 0 else 0.0) - time.monotonic()
                    if wait <= 0:
                        frame, self._pending, self._armed = self._pending, None, False
                        self._last_start = time.monotonic()
                        return frame
                self._cond.wait(timeout=min(wait, 0.1))
        return None

    def _frame_budget_ms(self) -> float | None:
        """This frame's time budget: None (the localizer's time_budget_ms) when that is set,
        else latency_budget_factor x the recent median pipeline time (None while warming up)."""
        if self._p["time_budget_ms"] > 0:
            return None
        with self._cond:
            self._budget.factor = self._p["latency_budget_factor"]
            return self._budget.budget_ms()

    def _worker_loop(self) -> None:
        while (frame := self._next_frame()) is not None:
            try:
                self._process(frame)
            except Exception as exc:  # keep the node alive whatever happens
                if self._stop.is_set() or not self.context.ok():
                    return  # shutting down: the publishers are gone
                self.get_logger().error(f"unexpected error: {exc}\n{traceback.format_exc()}")
                self._set_status(DiagnosticStatus.ERROR, f"unexpected error: {exc}", {})

    def _prior(self):
        """(center, radius, source) for the next query."""
        with self._cond:
            if self._p["tracking_enabled"] and self._tracking_center is not None:
                return self._tracking_center, self._p["tracking_radius_m"], "tracking"
            if self._initial_center is not None:
                return self._initial_center, self._p["prior_radius_m"], "initialpose"
        return None, None, "retrieval"

    def _problem(self, message: str, counter: str, values: dict) -> None:
        """WARN diagnostic + log line (repeats of the same message logged every 5 s)."""
        with self._cond:
            setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        now = time.monotonic()
        if message != self._last_log[0] or now - self._last_log[1] > 5.0:
            self.get_logger().warning(message)
            self._last_log = (message, now)
        self._set_status(DiagnosticStatus.WARN, message, values)

    def _stamp_problem(self, stamp_ns: int) -> str | None:
        """Why a frame's header stamp makes it unusable (None: usable)."""
        if stamp_ns <= 0:
            return (f"frame skipped: header stamp is {'zero' if stamp_ns == 0 else 'negative'} "
                    f"({stamp_ns} ns); the camera driver must stamp its images")
        max_age = self._p["max_image_age_s"]
        if max_age > 0:
            age = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
            if age > max_age:
                return f"frame skipped: image is {age:.2f} s old (max_image_age_s={max_age})"
        return None

    def _process(self, frame: _Frame) -> None:
        msg = frame.msg
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        problem = self._stamp_problem(stamp_ns)
        if problem is not None:
            self._problem(problem, "frames_stale", {})
            return
        if self._p["use_camera_info"] and not self._camera_received.is_set():
            self._camera_received.wait(self._p["camera_info_wait_s"])
        camera = self._camera
        if camera is None:
            self._problem(f"bad input: {self._camera_problem}", "frames_bad_input", {})
            return
        try:
            start = time.perf_counter()
            image = conv.image_msg_to_rgb(msg)
            frame.decode_ms = 1e3 * (time.perf_counter() - start)
            conv.check_image_matches_camera(image, camera)
        except S2DHMError as exc:
            self._problem(f"bad input: {exc}", "frames_bad_input", {})
            return
        with self._pipeline_lock:
            pipeline = self._pipeline
            if pipeline is None:
                self._set_status(DiagnosticStatus.ERROR, f"no map loaded: {self._map_error}", {})
                return
            center, radius, source = self._prior()
            budget = self._frame_budget_ms()
            try:
                features = pipeline.features(image, camera)  # the one backbone pass
                self._stats.backbone_passes += 1
                result = pipeline.localize_features(features, center, radius,
                                                    time_budget_ms=budget)
                if not result.success and source == "tracking":
                    source = "retrieval (tracking prior failed)"
                    result = pipeline.localize_features(features, None, None,
                                                        time_budget_ms=budget)
            except S2DHMError as exc:
                self._problem(f"bad input: {exc}", "frames_bad_input", {})
                return
        with self._cond:
            self._stats.frames_processed += 1
            self._rates.on_processed(time.monotonic())
            self._budget.observe(result.timings_ms.get("total", np.nan))
            frame.budget_ms = budget
        published = self._publish_result(msg, result, image, camera)
        values = self._result_values(result, source, frame, stamp_ns, published)
        with self._cond:
            if result.success:
                self._tracking_center = result.pose.center
                self._initial_center = None
            else:
                self._tracking_center = None
        if result.success:
            self._set_status(DiagnosticStatus.OK, "localized", values)
        else:
            self._problem(f"localization failed: {result.failure_reason}",
                          "localization_failures", values)

    def _publish_result(self, msg, result, image, camera) -> bool:
        """Publish pose (+TF, debug image); True if a pose went out."""
        if result.success and result.pose is not None:
            pose = result.pose
            covariance = None
            if result.covariance is not None and np.all(np.isfinite(result.covariance)):
                covariance = conv.covariance_to_ros(pose, result.covariance, self._frame_in_camera)
            else:
                covariance = np.diag([self._p["missing_position_variance_m2"]] * 3
                                     + [self._p["missing_rotation_variance_rad2"]] * 3)
            covariance = covariance / max(float(result.confidence), 1e-3)  # less sure: wider
            covariance = conv.floor_covariance(covariance, self._p["min_position_variance_m2"],
                                               self._p["min_rotation_variance_rad2"])
        else:
            return False  # never a pose that was not verified
        frame_id = self._p["map_frame"]
        out = conv.to_pose_with_covariance_stamped(pose, covariance, msg.header.stamp, frame_id,
                                                   self._frame_in_camera)
        self._pose_pub.publish(out)
        with self._cond:
            self._stats.poses_published += 1
            self._last_pose_time = time.monotonic()
        if self._tf is not None:
            child = (self._p["base_frame"] if self._frame_in_camera is not None
                     else self._p["camera_frame"] or msg.header.frame_id)
            if child:
                self._tf.sendTransform(conv.to_transform_stamped(
                    pose, msg.header.stamp, frame_id, child, self._frame_in_camera))
        if self._debug_pub is not None:
            self._debug_pub.publish(conv.rgb_to_image_msg(
                draw_matches(image, result, camera), msg.header))
        return True

    def _result_values(self, result, source, frame, stamp_ns, published) -> dict:
        now_ns = self.get_clock().now().nanoseconds
        values = {f"latency_{stage}_ms": f"{ms:.1f}" for stage, ms in result.timings_ms.items()}
        values.update({
            "latency_decode_ms": f"{frame.decode_ms:.1f}",
            "time_budget_ms": "none" if frame.budget_ms is None else f"{frame.budget_ms:.0f}",
            "latency_receive_to_result_ms": f"{1e3 * (time.monotonic() - frame.received):.1f}",
            "latency_stamp_to_result_ms": f"{(now_ns - stamp_ns) * 1e-6:.1f}",
            "frame_stamp_ns": str(stamp_ns),
            "num_matches": str(result.num_matches),
            "num_inliers": str(result.num_inliers),
            "confidence": f"{result.confidence:.3f}",
            "supporting_references": " ".join(result.supporting_references) or "none",
            "references_matched": str(len(result.reference_names)),
            "retrieval_score": (f"{result.retrieval_scores[0]:.4f}"
                                if result.retrieval_scores else "none"),
            "top_reference": result.reference_names[0] if result.reference_names else "none",
            "retrieval_prior": source,
            "refine_reason": str(result.refine_reason),
            "pose_published": str(published),
            "weights_random": str(getattr(result, "weights_random", False)),
        })
        return values

    # ------------------------------------------------------------------ diagnostics

    def _set_status(self, level, message: str, values: dict) -> None:
        self._status = (level, message, values)
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or not self.context.ok():
            return
        level, message, values = self._status
        if self._pipeline is None:
            level, message = DiagnosticStatus.ERROR, f"no map loaded: {self._map_error}"
        elif self._reload_error is not None:  # the requested map is not the one serving
            level = DiagnosticStatus.ERROR
            message = f"{message}; {self._reload_error}" if message != self._reload_error \
                else message
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: localization",
                                  message=message, hardware_id=self._device)
        now = time.monotonic()
        with self._cond:
            summary = dataclasses.asdict(self._stats)
            receive_hz, processed_hz = self._rates.hz(now)
            last_pose = self._last_pose_time
        summary.update({
            "receive_rate_hz": f"{receive_hz:.2f}", "processed_rate_hz": f"{processed_hz:.2f}",
            "last_pose_age_s": "never" if last_pose is None else f"{now - last_pose:.2f}",
            "active": str(self._active),
            "map_loaded": str(self._pipeline is not None),
            "map_in_use": str(self._map_in_use or "none"),
            "map_dir": str(self._p["map_dir"]), "device": self._device,
            "reload_error": str(self._reload_error or "none"),
            "camera": "ok" if self._camera is not None else str(self._camera_problem),
            "image_decoder": conv.image_backend()})
        summary.update(values)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in summary.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        if self.context.ok():
            self._diag_pub.publish(array)


class LocalizerNode(_LocalizerBehaviour, Node):
    """The plain ``s2dhm_localizer`` node: loads the map at start-up and runs."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._init_localizer()
        self._create_interfaces(self.create_publisher)
        self.reload_map()  # loads map + weights once, with a warm-up pass
        self._active = True
        self._log_ready()

    def destroy_node(self):
        if getattr(self, "_stats", None) is not None:
            self._destroy_interfaces()
            self._log_counts()
        return super().destroy_node()


class LifecycleLocalizerNode(_LocalizerBehaviour, LifecycleNode):
    """The managed ``s2dhm_localizer`` node (see the module doc for the transitions)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._init_localizer()
        self._status = (DiagnosticStatus.WARN, "unconfigured", {})

    def on_configure(self, state) -> TransitionCallbackReturn:
        ok, message = self.reload_map()
        if not ok:
            self.get_logger().error(f"configure failed: {message}")
            return TransitionCallbackReturn.FAILURE
        self._create_interfaces(self.create_lifecycle_publisher)
        self._set_status(DiagnosticStatus.OK, f"configured (inactive): {message}", {})
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self._active = True
        result = super().on_activate(state)
        self._log_ready()
        self._set_status(DiagnosticStatus.OK, "active", {})
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self._active = False
        with self._cond:
            self._pending = None
        with self._pipeline_lock:  # let the frame in flight finish
            pass
        self._set_status(DiagnosticStatus.OK, "inactive", {})
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self._active = False
        self._destroy_interfaces()
        self._release_pipeline()
        self.get_logger().info("cleaned up: pipeline and interfaces released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self._active = False
        self._destroy_interfaces()
        self._release_pipeline()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        if getattr(self, "_stats", None) is not None:
            self._active = False
            self._destroy_interfaces()
            self._log_counts()
        return super().destroy_node()


def draw_matches(image: np.ndarray, result, camera) -> np.ndarray:
    """Query image (H, W, 3) RGB with inlier keypoints (green) and the reprojection of their
    3D points through the estimated pose (red), joined by a line."""
    import cv2  # noqa: PLC0415

    canvas = image.copy()
    keypoints = np.asarray(result.inlier_keypoints, dtype=np.float64).reshape(-1, 2)
    points = np.asarray(result.inlier_points3d, dtype=np.float64).reshape(-1, 3)
    projected = None
    if result.pose is not None and len(points):
        projected, valid = camera.project_np(result.pose.transform(points), check_bounds=False)
        projected = np.where(valid[:, None], projected, np.nan)
    for i, (u, v) in enumerate(keypoints):
        cv2.circle(canvas, (int(round(u)), int(round(v))), 3, (0, 255, 0), 1, cv2.LINE_AA)
        if projected is not None and np.all(np.isfinite(projected[i])):
            end = (int(round(projected[i, 0])), int(round(projected[i, 1])))
            cv2.line(canvas, (int(round(u)), int(round(v))), end, (255, 0, 0), 1, cv2.LINE_AA)
    return canvas


def _spin(node_class, args) -> int:
    """Run one node until SIGINT/SIGTERM; 1 (with the reason, no traceback) on bad parameters."""
    transport = apply_transport()  # before the middleware reads its environment
    init_ros(args=args)
    node = executor = None
    code = 0
    try:
        node = node_class()
        node.get_logger().info(transport.summary())
        if transport.applied is not None and (warning := socket_buffer_warning()):
            node.get_logger().warning(warning)
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        while rclpy.ok():  # a bounded wait: the signal handler runs between waits
            executor.spin_once(timeout_sec=SIGNAL_POLL_S)
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(f"invalid parameter: {exc}")
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return code


def main(args=None) -> None:
    """Console script ``localizer_node``."""
    raise SystemExit(_spin(LocalizerNode, args))


def lifecycle_main(args=None) -> None:
    """Console script ``lifecycle_localizer_node`` (configure/activate it, e.g. with nav2's
    lifecycle manager)."""
    raise SystemExit(_spin(LifecycleLocalizerNode, args))


if __name__ == "__main__":
    main()
