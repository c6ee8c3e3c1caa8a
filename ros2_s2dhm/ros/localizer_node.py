"""ROS 2 nodes ``s2dhm_localizer``: ROS adapters over :class:`ros2_s2dhm.service.LocalizationService`.

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

What happens to a frame (the slot, the priors, the time budget, counters, reasons) is the
service's; the node declares parameters, subscribes with history depth 1, converts messages
both ways, publishes and reports on /diagnostics. Its process takes large camera frames at the
middleware's defaults (:mod:`ros2_s2dhm.ros.transport`) and stops on SIGINT/SIGTERM in every
state (:mod:`ros2_s2dhm.ros.process`).

Parameters: :data:`ros2_s2dhm.ros.parameters.PARAMETERS` (checked when declared or set;
``config/localize.yaml`` is generated from it).

Run without ``ros2 launch``:
  ``localizer_node --ros-args --params-file config/localize.yaml -p map_dir:=/path/map``
"""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseWithCovarianceStamped
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import InvalidParameterValueException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import Trigger

from ros2_s2dhm.drawing import draw_matches
from ros2_s2dhm.errors import CameraError
from ros2_s2dhm.options import OptionError
from ros2_s2dhm.ros import conversions as conv
from ros2_s2dhm.ros.parameters import (LOCALIZER, NODE_NAME, PARAMETERS, SERVICE, descriptor,
                                       image_qos, localizer_values, refusal, service_config)
from ros2_s2dhm.ros.process import run_node
from ros2_s2dhm.runtime import build_localizer
from ros2_s2dhm.service import Level, LocalizationService, Outcome

__all__ = ["LocalizerNode", "LifecycleLocalizerNode", "PARAMETERS", "NODE_NAME", "build_pipeline",
           "main", "lifecycle_main"]


def build_pipeline(map_dir: str, weights: str, device: str, config: dict):
    """The real pipeline, assembled as the offline tools do (:func:`runtime.build_localizer`).

    ``config``: flat localizer options (``top_k``, ``image_size``, ``use_ratio_test``, ...).
    Raises S2DHMError subclasses (MapFormatError, CheckpointError) for bad files.
    """
    return build_localizer(map_dir, weights, device, **config)[0]


#: Factory used by the node; tests may replace it with a fake of the same signature.
PIPELINE_FACTORY = build_pipeline
_LEVELS = {Level.OK: DiagnosticStatus.OK, Level.WARN: DiagnosticStatus.WARN,
           Level.ERROR: DiagnosticStatus.ERROR}


def _tf_broadcaster_or_none(node: Node):
    try:
        from tf2_ros import TransformBroadcaster  # noqa: PLC0415
    except ImportError:
        return None
    return TransformBroadcaster(node)


class _LocalizerAdapter:
    """What the two node forms share (``self`` is also an rclpy Node)."""

    # ------------------------------------------------------------------ parameters

    def _init_localizer(self) -> None:
        self._p = {name: opt.default for name, opt in PARAMETERS.items()}
        self._interfaces: list = []
        self._tf = self._debug_pub = self._pose_pub = self._diag_pub = None
        self._frame_in_camera = None
        self._image_topic = "image"
        self._declaring = True
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        for name, opt in PARAMETERS.items():
            self.declare_parameter(name, opt.default, descriptor(opt))
        self._declaring = False
        try:  # the service and localizer options together (one at a time they were checked alone)
            self.service = LocalizationService(
                service_config(self._p), localizer_values(self._p), PIPELINE_FACTORY,
                clock_ns=lambda: self.get_clock().now().nanoseconds)
        except OptionError as exc:
            raise InvalidParameterValueException("localizer options", "", str(exc)) from exc

    def _check_parameters(self, params) -> SetParametersResult:
        """Reject a value out of range / not a choice / refused by the localizer config."""
        reason = refusal(self._p, {p.name: p.value for p in params}, self._declaring)
        return SetParametersResult(successful=reason is None, reason=reason or "")

    def _apply_parameters(self, params) -> None:
        """Accepted values take effect: service and localizer options at once."""
        changes = {p.name: PARAMETERS[p.name].check(p.value) for p in params
                   if p.name in PARAMETERS}
        self._p.update(changes)
        if not self._declaring and (changed := self.service.update(
                {k: v for k, v in changes.items() if k in SERVICE or k in LOCALIZER})):
            self.get_logger().info("localizer options set: " + ", ".join(
                f"{name}={changes[name]!r}" for name in changed))

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
            self.service.set_camera(conv.camera_from_parameters(
                self._p["camera_model"], self._p["camera_width"], self._p["camera_height"],
                self._p["camera_params"]))
        except CameraError as exc:
            self.service.set_camera(None, f"camera_* parameters: {exc}")
            self.get_logger().error(f"camera_* parameters: {exc}")

    # ------------------------------------------------------------------ map

    def reload_map(self) -> tuple[bool, str]:
        """(Re)load map + weights from the current parameters; keeps the old pipeline on error."""
        ok, message = self.service.load_map()
        if ok:  # (rclpy refuses two severities from one call site)
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)
        self._publish_diagnostics()
        return ok, message

    # ------------------------------------------------------------------ interfaces

    def _create_interfaces(self, pose_publisher) -> None:
        """Publishers, services, subscriptions, the heartbeat and the service's worker."""
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
        made += [self.create_service(Trigger, f"~/{name}", callback, callback_group=services)
                 for name, callback in (("reload_map", self._on_reload), ("reset", self._on_reset),
                                        ("trigger_localization", self._on_trigger))]
        qos = image_qos(self._p["image_qos"])
        inputs = MutuallyExclusiveCallbackGroup()
        if self._p["use_camera_info"]:
            if self.service.camera is None:
                self.service.camera_problem = "no CameraInfo received yet on 'camera_info'"
            made.append(self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                 qos, callback_group=inputs))
        else:
            self._camera_from_parameters()
        made.append(self.create_subscription(PoseWithCovarianceStamped, "initialpose",
                                             self._on_initialpose, 10, callback_group=inputs))
        msg_type, self._image_topic = Image, self.resolve_topic_name("image")
        if self._p["use_compressed"]:  # image_transport naming: <image topic>/compressed
            msg_type, self._image_topic = CompressedImage, self._image_topic + "/compressed"
        made.append(self.create_subscription(msg_type, self._image_topic, self._on_image, qos,
                                             callback_group=inputs))
        if self._p["diagnostics_period_s"] > 0:
            made.append(self.create_timer(self._p["diagnostics_period_s"],
                                          self._publish_diagnostics))
        self._interfaces = [m for m in made if m is not None]
        self.service.start(conv.image_msg_to_rgb, self._on_outcome)

    def _destroy_interfaces(self) -> None:
        """Stop the worker and destroy what :meth:`_create_interfaces` made."""
        self.service.stop()
        for entity in self._interfaces:
            self._destroy_entity(entity)
        self._interfaces = []
        self._debug_pub = self._pose_pub = self._diag_pub = None

    def _destroy_entity(self, entity) -> None:
        """Destroy through the node, which also forgets it (the executor must not wait on it)."""
        if hasattr(entity, "on_activate") and hasattr(self, "destroy_lifecycle_publisher"):
            self.destroy_lifecycle_publisher(entity)
            return
        kinds = {"Timer": self.destroy_timer, "Subscription": self.destroy_subscription,
                 "Service": self.destroy_service, "Publisher": self.destroy_publisher}
        for cls in type(entity).__mro__:
            if cls.__name__ in kinds:
                kinds[cls.__name__](entity)
                return

    def _log_ready(self) -> None:
        s = self.service
        self.get_logger().info(
            f"ready: {self._image_topic} (qos {self._p['image_qos']}, depth 1), device "
            f"{s.device}, decoder {conv.image_backend()}, map "
            f"{repr(s.map_in_use) if s.pipeline else 'NOT loaded'}")

    # ------------------------------------------------------------------ callbacks

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            self.service.set_camera(
                conv.camera_info_to_camera(msg, self._p["use_rectified_intrinsics"]))
        except CameraError as exc:
            self.service.set_camera(None, f"invalid CameraInfo: {exc}")

    def _on_image(self, msg) -> None:
        self.service.offer(msg, conv.stamp_to_ns(msg.header.stamp))

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
        self.service.set_initial_prior(pose.center)
        self.get_logger().info(f"retrieval prior: within {self._p['prior_radius_m']} m of "
                               f"{np.round(pose.center, 2).tolist()}")

    def _on_reload(self, _request, response):
        response.success, response.message = self.reload_map()
        return response

    def _on_reset(self, _request, response):
        self.service.reset_priors()
        response.success, response.message = True, "tracking and initialpose priors cleared"
        return response

    def _on_trigger(self, _request, response):
        response.success = True
        if self._p["continuous"]:
            response.message = "continuous mode: every frame is localized"
        else:
            self.service.arm()
            response.message = "armed: the newest frame will be localized"
        return response

    # ------------------------------------------------------------------ outputs

    def _on_outcome(self, outcome: Outcome) -> None:
        """On the worker: publish a verified pose (+TF, debug image), log, report."""
        if outcome.pose_verified:
            self._publish_pose(outcome)
        elif outcome.log and outcome.level == Level.ERROR:
            self.get_logger().error(outcome.message + (f"\n{outcome.detail}" if outcome.detail
                                                        else ""))
        elif outcome.log and outcome.level == Level.WARN:
            self.get_logger().warning(outcome.message)
        self._publish_diagnostics()

    def _publish_pose(self, outcome: Outcome) -> None:
        result, msg, p = outcome.result, outcome.frame.payload, self._p
        pose = result.pose
        covariance = conv.published_covariance(
            result, self._frame_in_camera,
            (p["missing_position_variance_m2"], p["missing_rotation_variance_rad2"]),
            (p["min_position_variance_m2"], p["min_rotation_variance_rad2"]))
        frame_id = self._p["map_frame"]
        self._pose_pub.publish(conv.to_pose_with_covariance_stamped(
            pose, covariance, msg.header.stamp, frame_id, self._frame_in_camera))
        if self._tf is not None:
            child = (self._p["base_frame"] if self._frame_in_camera is not None
                     else self._p["camera_frame"] or msg.header.frame_id)
            if child:
                self._tf.sendTransform(conv.to_transform_stamped(
                    pose, msg.header.stamp, frame_id, child, self._frame_in_camera))
        if self._debug_pub is not None:
            self._debug_pub.publish(conv.rgb_to_image_msg(
                draw_matches(outcome.image, result, outcome.camera), msg.header))

    def _set_status(self, level: Level, message: str) -> None:
        self.service.status = (level, message, {})
        self._publish_diagnostics()

    def _publish_diagnostics(self) -> None:
        if self._diag_pub is None or not self.context.ok():
            return
        level, message, values = self.service.diagnostics()
        values["image_decoder"] = conv.image_backend()
        status = DiagnosticStatus(level=_LEVELS[level], name=f"{self.get_name()}: localization",
                                  message=message, hardware_id=self.service.device)
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def _log_counts(self) -> None:
        self.get_logger().info("frames: " + self.service.counts_text())


class LocalizerNode(_LocalizerAdapter, Node):
    """The plain ``s2dhm_localizer`` node: loads the map at start-up and runs."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._init_localizer()
        self._create_interfaces(self.create_publisher)
        self.reload_map()  # loads map + weights once, with a warm-up pass
        self.service.active = True
        self._log_ready()

    def destroy_node(self):
        if getattr(self, "service", None) is not None:
            self._destroy_interfaces()
            self._log_counts()
        return super().destroy_node()


class LifecycleLocalizerNode(_LocalizerAdapter, LifecycleNode):
    """The managed ``s2dhm_localizer`` node (see the module doc for the transitions)."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self._init_localizer()
        self.service.status = (Level.WARN, "unconfigured", {})

    def on_configure(self, state) -> TransitionCallbackReturn:
        ok, message = self.reload_map()
        if not ok:
            self.get_logger().error(f"configure failed: {message}")
            return TransitionCallbackReturn.FAILURE
        self._create_interfaces(self.create_lifecycle_publisher)
        self._set_status(Level.OK, f"configured (inactive): {message}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state) -> TransitionCallbackReturn:
        self.service.active = True
        result = super().on_activate(state)
        self._log_ready()
        self._set_status(Level.OK, "active")
        return result

    def on_deactivate(self, state) -> TransitionCallbackReturn:
        self.service.active = False
        self.service.clear_pending()
        self._set_status(Level.OK, "inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state) -> TransitionCallbackReturn:
        self.on_shutdown(state)
        self.get_logger().info("cleaned up: pipeline and interfaces released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state) -> TransitionCallbackReturn:
        self.service.active = False
        self._destroy_interfaces()
        self.service.release()
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        if getattr(self, "service", None) is not None:
            self.service.active = False
            self._destroy_interfaces()
            self._log_counts()
        return super().destroy_node()


def main(args=None) -> None:
    """Console script ``localizer_node``."""
    raise SystemExit(run_node(LocalizerNode, args, NODE_NAME))


def lifecycle_main(args=None) -> None:
    """Console script ``lifecycle_localizer_node`` (configure/activate it, e.g. with nav2's
    lifecycle manager)."""
    raise SystemExit(run_node(LifecycleLocalizerNode, args, NODE_NAME))


if __name__ == "__main__":
    main()
