"""ROS 2 node ``s2dhm_localizer``: a thin shell over :class:`ros2_s2dhm.localizer.Localizer`.

Topics (relative names; remap them):
  sub ``image`` (sensor_msgs/Image) or, with ``use_compressed``, ``<image>/compressed``
      (sensor_msgs/CompressedImage; image_transport naming, so remapping ``image`` moves both),
      ``camera_info`` (sensor_msgs/CameraInfo), ``initialpose`` (PoseWithCovarianceStamped prior)
  pub ``~/pose`` (PoseWithCovarianceStamped), ``/diagnostics`` (DiagnosticArray),
      ``~/debug/matches`` (Image, optional), TF ``map_frame -> camera/base`` (when tf2_ros exists)
Services (std_srvs/Trigger): ``~/reload_map``, ``~/reset``, ``~/trigger_localization``.

Only the newest image is kept; a worker thread localizes it off the subscription callback and
frames replaced while it is busy are counted as dropped. Every parameter is listed in
:data:`PARAMETERS` (mirrored, with comments, in ``config/localize.yaml``).

Run without ``ros2 launch``:
  ``localizer_node --ros-args --params-file config/localize.yaml -p map_dir:=/path/map``
"""
from __future__ import annotations

import dataclasses
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data, qos_profile_system_default
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from ros2_s2dhm.errors import CameraError, S2DHMError
from ros2_s2dhm.ros import conversions as conv
from ros2_s2dhm.runtime import build_localizer, resolve_device

NODE_NAME = "s2dhm_localizer"

#: Every node parameter: name -> (default, description). ``config/localize.yaml`` documents the
#: same names; ``test/test_launch.py`` checks the two agree.
PARAMETERS: dict[str, tuple[object, str]] = {
    "map_dir": ("", "reference map directory (built by build_map); empty: no map until set and "
                    "~/reload_map is called"),
    "weights": ("default", "network weights: 'default' (the shipped weights), 'random' (seeded "
                           "random initialisation, testing only) or a file path"),
    "device": ("auto", "torch device: auto (cuda when available), cpu, cuda, cuda:1, ..."),
    "warmup": (True, "run one dummy localization after loading so the first frame is not slow"),
    "top_k": (10, "number of retrieved reference images"),
    "image_size": (0, "longer image side fed to the network; 0: the size the map was built at"),
    "refine_enabled": (True, "run Feature-metric PnP after RANSAC-PnP"),
    "use_ratio_test": (True, "S2DHM's ratio test on matches; false keeps ambiguous matches "
                             "(unsafe: textureless views may produce poses)"),
    "pnp_threshold_px": (12.0, "RANSAC-PnP inlier threshold in pixels of the input image "
                               "(12: S2DHM's value for 1024 px images)"),
    "use_compressed": (False, "subscribe <image>/compressed (CompressedImage) instead of image"),
    "image_qos": ("sensor_data", "QoS of the image and camera_info subscriptions: sensor_data, "
                                 "reliable or system_default"),
    "use_camera_info": (True, "intrinsics from camera_info; false: from the camera_* parameters"),
    "camera_info_wait_s": (1.0, "an image that arrives before the first CameraInfo waits this "
                                "long for it (bags write CameraInfo after the image)"),
    "use_rectified_intrinsics": (False, "take intrinsics from CameraInfo.p (rectified images)"),
    "camera_model": ("PINHOLE", "COLMAP camera model when use_camera_info is false"),
    "camera_width": (0, "image width in pixels when use_camera_info is false"),
    "camera_height": (0, "image height in pixels when use_camera_info is false"),
    "camera_params": ([0.0, 0.0, 0.0, 0.0], "camera_model parameters (OpenCV pixel convention), "
                                            "e.g. PINHOLE fx fy cx cy"),
    "continuous": (True, "localize every frame; false: only after ~/trigger_localization"),
    "max_rate_hz": (0.0, "at most this many localizations per second; 0: unlimited"),
    "max_image_age_s": (0.0, "skip (WARN) frames older than this when processing starts; 0: off"),
    "map_frame": ("map", "frame_id of the published pose and parent of the TF"),
    "camera_frame": ("", "camera frame name; empty: the image's header.frame_id"),
    "base_frame": ("", "publish the pose of this frame instead of the camera's; needs "
                       "base_to_camera"),
    "base_to_camera": ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "pose of the camera optical frame in "
                                                       "base_frame: x y z roll pitch yaw"),
    "publish_tf": (True, "broadcast map_frame -> camera (or base) when tf2_ros is available"),
    "min_confidence": (0.5, "publish only poses whose confidence (verified inlier ratio, spread, "
                            "agreement of references, margin over rivals) reaches this, 0..1; the "
                            "published covariance is divided by the confidence"),
    "min_position_variance_m2": (1e-6, "floor of the published position variances"),
    "min_rotation_variance_rad2": (1e-8, "floor of the published rotation variances"),
    "missing_position_variance_m2": (1.0, "position variance published when the pipeline gave "
                                          "no covariance (refinement off)"),
    "missing_rotation_variance_rad2": (0.01, "rotation variance published when the pipeline gave "
                                             "no covariance"),
    "tracking_enabled": (True, "after a success, retrieve only references near the last pose"),
    "tracking_radius_m": (25.0, "radius of the tracking prior"),
    "prior_radius_m": (50.0, "radius of the initialpose retrieval prior"),
    "publish_debug_image": (False, "publish ~/debug/matches with the inlier matches drawn"),
    "diagnostics_period_s": (1.0, "period of the /diagnostics heartbeat"),
}

#: Parameters whose value is an array of doubles (declared with an explicit type).
_DOUBLE_ARRAYS = {"camera_params", "base_to_camera"}


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


@dataclass
class _Stats:
    frames_received: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0
    frames_stale: int = 0
    frames_bad_input: int = 0
    localization_failures: int = 0
    poses_published: int = 0


def _tf_broadcaster_or_none(node: Node):
    try:
        from tf2_ros import TransformBroadcaster  # noqa: PLC0415
    except ImportError:
        return None
    return TransformBroadcaster(node)


class LocalizerNode(Node):
    """The ``s2dhm_localizer`` node; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        for name, (default, description) in PARAMETERS.items():
            descriptor = ParameterDescriptor(description=description)
            if name in _DOUBLE_ARRAYS:
                descriptor.type = ParameterType.PARAMETER_DOUBLE_ARRAY
            self.declare_parameter(name, default, descriptor)
        self._p = self._read_parameters()

        self._cond = threading.Condition()
        self._pipeline_lock = threading.Lock()
        self._stop = threading.Event()
        self._pending: _Frame | None = None
        self._armed = False
        self._last_start = -np.inf
        self._stats = _Stats()
        self._pipeline = None
        self._map_error = "map_dir is not set"
        self._device = "cpu"
        self._camera = None
        self._camera_problem = "no CameraInfo received yet on 'camera_info'"
        self._camera_received = threading.Event()
        self._tracking_center: np.ndarray | None = None
        self._initial_center: np.ndarray | None = None
        self._last_log: tuple[str, float] = ("", 0.0)
        self._status = (DiagnosticStatus.ERROR, "starting", {})
        self._frame_in_camera = None

        self._pose_pub = self.create_publisher(PoseWithCovarianceStamped, "~/pose", 10)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._debug_pub = (self.create_publisher(Image, "~/debug/matches", 1)
                           if self._p["publish_debug_image"] else None)
        self._tf = _tf_broadcaster_or_none(self) if self._p["publish_tf"] else None
        if self._p["publish_tf"] and self._tf is None:
            self.get_logger().info("tf2_ros is not importable: TF broadcasting is off "
                                   "(the pose is still published on ~/pose)")
        self._configure_frames()

        self.reload_map()  # loads map + weights once, with a warm-up pass

        services = ReentrantCallbackGroup()
        self.create_service(Trigger, "~/reload_map", self._on_reload, callback_group=services)
        self.create_service(Trigger, "~/reset", self._on_reset, callback_group=services)
        self.create_service(Trigger, "~/trigger_localization", self._on_trigger,
                            callback_group=services)
        qos = self._image_qos()
        inputs = MutuallyExclusiveCallbackGroup()
        if self._p["use_camera_info"]:
            self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos,
                                     callback_group=inputs)
        else:
            self._camera_from_parameters()
        self.create_subscription(PoseWithCovarianceStamped, "initialpose", self._on_initialpose,
                                 10, callback_group=inputs)
        if self._p["use_compressed"]:  # image_transport naming: <image topic>/compressed
            self._image_topic = self.resolve_topic_name("image") + "/compressed"
            self.create_subscription(CompressedImage, self._image_topic, self._on_image, qos,
                                     callback_group=inputs)
        else:
            self._image_topic = self.resolve_topic_name("image")
            self.create_subscription(Image, "image", self._on_image, qos, callback_group=inputs)
        period = self._p["diagnostics_period_s"]
        if period > 0:
            self.create_timer(period, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._worker_loop, name="s2dhm_worker",
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: {self._image_topic} "
            f"(qos {self._p['image_qos']}), device {self._device}, "
            f"decoder {conv.image_backend()}, map {'loaded' if self._pipeline else 'NOT loaded'}")

    # ------------------------------------------------------------------ setup

    def _read_parameters(self) -> dict:
        return {name: self.get_parameter(name).value for name in PARAMETERS}

    def _image_qos(self) -> QoSProfile:
        choice = self._p["image_qos"]
        profiles = {"sensor_data": qos_profile_sensor_data,
                    "reliable": QoSProfile(depth=5),
                    "system_default": qos_profile_system_default}
        if choice not in profiles:
            self.get_logger().error(f"parameter image_qos={choice!r} is not one of "
                                    f"{sorted(profiles)}; using sensor_data")
            choice = "sensor_data"
        return profiles[choice]

    def _configure_frames(self) -> None:
        """Pose of the published frame in the camera (None: the camera itself)."""
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

    def _localizer_config(self) -> dict:
        config = {"top_k": int(self._p["top_k"]), "refine_enabled": bool(self._p["refine_enabled"]),
                  "use_ratio_test": bool(self._p["use_ratio_test"]),
                  "pnp_threshold_px": float(self._p["pnp_threshold_px"]),
                  "min_confidence": float(self._p["min_confidence"])}
        if self._p["image_size"] > 0:
            config["image_size"] = int(self._p["image_size"])
        return config

    def reload_map(self) -> tuple[bool, str]:
        """(Re)load map + weights from the current parameters; keeps the old pipeline on error."""
        self._p = self._read_parameters()
        if not self._p["map_dir"]:
            self._map_error = "map_dir is not set"
            self.get_logger().error("parameter map_dir is empty: no map loaded; set it and call "
                                    "~/reload_map")
            return False, self._map_error
        start = time.perf_counter()
        try:
            device = resolve_device(self._p["device"])
            pipeline = PIPELINE_FACTORY(self._p["map_dir"], self._p["weights"], device,
                                        self._localizer_config())
        except (S2DHMError, OSError, ValueError, RuntimeError) as exc:
            self._map_error = f"cannot load map {self._p['map_dir']!r}: {exc}"
            self.get_logger().error(self._map_error)
            return False, self._map_error
        if self._p["warmup"]:
            self._warm_up(pipeline)
        with self._pipeline_lock:
            self._pipeline, self._device, self._map_error = pipeline, device, None
            self._tracking_center = None
        message = (f"map {self._p['map_dir']!r} loaded on {device} in "
                   f"{time.perf_counter() - start:.1f} s")
        self.get_logger().info(message)
        self._set_status(DiagnosticStatus.OK, message, {})
        return True, message

    def _warm_up(self, pipeline) -> None:
        """One dummy query so lazy initialisation (cuDNN, allocators) is not paid by frame 1."""
        from ros2_s2dhm.geometry.camera import Camera  # noqa: PLC0415

        width, height = 160, 120
        camera = Camera.from_pinhole(100.0, 100.0, width / 2 - 0.5, height / 2 - 0.5, width, height)
        try:
            pipeline.localize(np.full((height, width, 3), 127, np.uint8), camera, None, None)
        except Exception as exc:  # a warm-up failure is not fatal
            self.get_logger().warning(f"warm-up pass failed: {exc}")

    # ------------------------------------------------------------------ callbacks

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._camera_received.set()
        try:
            self._camera = conv.camera_info_to_camera(msg, self._p["use_rectified_intrinsics"])
            self._camera_problem = None
        except CameraError as exc:
            self._camera = None
            self._camera_problem = f"invalid CameraInfo: {exc}"

    def _on_image(self, msg) -> None:
        with self._cond:
            self._stats.frames_received += 1
            if self._pending is not None and (self._p["continuous"] or self._armed):
                self._stats.frames_dropped += 1
            self._pending = _Frame(msg, time.monotonic())
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
        self._initial_center = pose.center
        self._tracking_center = None
        self.get_logger().info(f"retrieval prior: within {self._p['prior_radius_m']} m of "
                               f"{np.round(pose.center, 2).tolist()}")

    def _on_reload(self, _request, response):
        response.success, response.message = self.reload_map()
        return response

    def _on_reset(self, _request, response):
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
        if self._p["tracking_enabled"] and self._tracking_center is not None:
            return self._tracking_center, self._p["tracking_radius_m"], "tracking"
        if self._initial_center is not None:
            return self._initial_center, self._p["prior_radius_m"], "initialpose"
        return None, None, "retrieval"

    def _problem(self, message: str, counter: str, values: dict) -> None:
        """WARN diagnostic + log line (repeats of the same message logged every 5 s)."""
        setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        now = time.monotonic()
        if message != self._last_log[0] or now - self._last_log[1] > 5.0:
            self.get_logger().warning(message)
            self._last_log = (message, now)
        self._set_status(DiagnosticStatus.WARN, message, values)

    def _process(self, frame: _Frame) -> None:
        msg = frame.msg
        stamp_ns = conv.stamp_to_ns(msg.header.stamp)
        max_age = self._p["max_image_age_s"]
        if max_age > 0:
            age = (self.get_clock().now().nanoseconds - stamp_ns) * 1e-9
            if age > max_age:
                self._problem(f"frame skipped: image is {age:.2f} s old (max_image_age_s="
                              f"{max_age})", "frames_stale", {})
                return
        if self._p["use_camera_info"] and not self._camera_received.is_set():
            self._camera_received.wait(self._p["camera_info_wait_s"])
        camera = self._camera
        if camera is None:
            self._problem(f"bad input: {self._camera_problem}", "frames_bad_input", {})
            return
        try:
            image = conv.image_msg_to_rgb(msg)
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
            try:
                features = pipeline.features(image, camera)  # the one backbone pass
                result = pipeline.localize_features(features, center, radius)
                if not result.success and source == "tracking":
                    source = "retrieval (tracking prior failed)"
                    result = pipeline.localize_features(features, None, None)
            except S2DHMError as exc:
                self._problem(f"bad input: {exc}", "frames_bad_input", {})
                return
        self._stats.frames_processed += 1
        published = self._publish_result(msg, result, image, camera)
        values = self._result_values(result, source, frame, stamp_ns, published)
        if result.success:
            self._tracking_center = result.pose.center
            self._initial_center = None
            self._set_status(DiagnosticStatus.OK, "localized", values)
        else:
            self._tracking_center = None
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
        self._stats.poses_published += 1
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
            "latency_receive_to_result_ms": f"{1e3 * (time.monotonic() - frame.received):.1f}",
            "latency_stamp_to_result_ms": f"{(now_ns - stamp_ns) * 1e-6:.1f}",
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
        if not self.context.ok():
            return
        level, message, values = self._status
        if self._pipeline is None:
            level, message = DiagnosticStatus.ERROR, f"no map loaded: {self._map_error}"
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: localization",
                                  message=message, hardware_id=self._device)
        summary = dataclasses.asdict(self._stats)
        summary.update({"map_loaded": str(self._pipeline is not None),
                        "map_dir": str(self._p["map_dir"]), "device": self._device,
                        "camera": "ok" if self._camera is not None else str(self._camera_problem),
                        "image_decoder": conv.image_backend()})
        summary.update(values)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in summary.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    # ------------------------------------------------------------------ lifecycle

    def destroy_node(self):
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        worker = getattr(self, "_worker", None)
        if worker is not None and worker.is_alive():
            worker.join(timeout=30.0)
        stats = getattr(self, "_stats", None)
        if stats is not None:
            self.get_logger().info("frames: " + ", ".join(
                f"{name} {value}" for name, value in vars(stats).items()))
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


def main(args=None) -> None:
    """Console script ``localizer_node``."""
    rclpy.init(args=args)
    node = executor = None
    try:
        node = LocalizerNode()
        executor = MultiThreadedExecutor(num_threads=3)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()

if __name__ == "__main__":
    main()
