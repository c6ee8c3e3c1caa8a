"""The node's parameters: the service's (:class:`~ros2_s2dhm.service.ServiceConfig`), its own
ROS-only ones (topics, QoS, frames, covariance, ...) and every localizer option.

The service and localizer options come from their config dataclasses (:mod:`ros2_s2dhm.options`),
so a new config field is a new parameter without touching this file. Each parameter is declared with a
descriptor (type, description, range, read-only) and every value is checked when it is declared
or set: out of range, not one of the choices, or a set of localizer options that the config
refuses is rejected with the reason. ``config/localize.yaml`` is generated from this table::

    python -m ros2_s2dhm.ros.parameters > config/localize.yaml
"""
from __future__ import annotations

import sys
import textwrap

from ros2_s2dhm.localizer_options import localizer_config, localizer_options
from ros2_s2dhm.options import Option, OptionError, options_of
from ros2_s2dhm.service import ServiceConfig

NODE_NAME = "s2dhm_localizer"
IMAGE_QOS = ("sensor_data", "reliable", "system_default")


def _node(name, default, help, **kw) -> Option:
    kind = kw.pop("kind", None) or (list if isinstance(default, list) else type(default))
    return Option(name=name, default=default, help=help, kind=kind, **kw)


#: The node's ROS-only parameters (read_only: fixed once the node is configured).
NODE_OPTIONS: tuple[Option, ...] = (
    _node("use_compressed", False, "subscribe <image>/compressed (CompressedImage) instead of image",
          read_only=True),
    _node("image_qos", "sensor_data", "QoS of the image and camera_info subscriptions (history "
                                      "depth 1: the newest frame replaces an unread one)",
          choices=IMAGE_QOS, read_only=True),
    _node("use_camera_info", True, "intrinsics from camera_info; false: from the camera_* "
                                   "parameters", read_only=True),
    _node("use_rectified_intrinsics", False, "take intrinsics from CameraInfo.p (rectified images)"),
    _node("camera_model", "PINHOLE", "COLMAP camera model when use_camera_info is false",
          read_only=True),
    _node("camera_width", 0, "image width in pixels when use_camera_info is false", low=0,
          read_only=True),
    _node("camera_height", 0, "image height in pixels when use_camera_info is false", low=0,
          read_only=True),
    _node("camera_params", [0.0, 0.0, 0.0, 0.0], "camera_model parameters (OpenCV pixel "
                                                 "convention), e.g. PINHOLE fx fy cx cy",
          read_only=True),
    _node("map_frame", "map", "frame_id of the published pose and parent of the TF",
          read_only=True),
    _node("camera_frame", "", "camera frame name; empty: the image's header.frame_id",
          read_only=True),
    _node("base_frame", "", "publish the pose of this frame instead of the camera's; needs "
                            "base_to_camera", read_only=True),
    _node("base_to_camera", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "pose of the camera optical frame "
                                                            "in base_frame: x y z roll pitch yaw",
          read_only=True),
    _node("publish_tf", True, "broadcast map_frame -> camera (or base) when tf2_ros is available",
          read_only=True),
    _node("min_position_variance_m2", 1e-6, "floor of the published position variances",
          low=0.0),
    _node("min_rotation_variance_rad2", 1e-8, "floor of the published rotation variances",
          low=0.0),
    _node("missing_position_variance_m2", 1.0, "position variance published when the pipeline "
                                               "gave no covariance (refinement off)", low=0.0),
    _node("missing_rotation_variance_rad2", 0.01, "rotation variance published when the "
                                                  "pipeline gave no covariance", low=0.0),
    _node("publish_debug_image", False, "publish ~/debug/matches with the inlier matches drawn",
          read_only=True),
    _node("diagnostics_period_s", 1.0, "period of the /diagnostics heartbeat; 0: on events only",
          low=0.0, read_only=True),
)

SERVICE = {o.name: o for o in options_of(ServiceConfig)}
LOCALIZER = localizer_options()
#: Every node parameter: name -> Option (the service's, the node's ROS-only ones, the localizer's).
PARAMETERS: dict[str, Option] = SERVICE | {o.name: o for o in NODE_OPTIONS} | LOCALIZER
if len(PARAMETERS) != len(SERVICE) + len(NODE_OPTIONS) + len(LOCALIZER):
    raise TypeError("a node parameter has the name of a service or localizer option")


def descriptor(opt: Option):
    """The rcl_interfaces ParameterDescriptor of an option (type, text, range, read-only)."""
    from rcl_interfaces.msg import (  # noqa: PLC0415
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )

    types = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER,
             float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING,
             list: ParameterType.PARAMETER_DOUBLE_ARRAY}
    d = ParameterDescriptor(description=opt.help, type=types[opt.kind], read_only=opt.read_only)
    d.additional_constraints = opt.range_text()
    # ROS ranges are closed on both sides and cannot say "or 0": only those that fit
    if opt.low is not None and opt.high is not None and opt.none_value is None:
        if opt.kind is int:
            d.integer_range = [IntegerRange(from_value=int(opt.low), to_value=int(opt.high),
                                            step=1)]
        elif opt.kind is float:
            d.floating_point_range = [FloatingPointRange(from_value=float(opt.low),
                                                         to_value=float(opt.high), step=0.0)]
    return d


def check_values(current: dict, changes: dict) -> dict:
    """``current`` updated with ``changes`` ({name: value}), every value checked.

    Raises OptionError with the reason (unknown name, type, range, choices, or a set of
    localizer options the config refuses).
    """
    values = dict(current)
    for name, value in changes.items():
        if name not in PARAMETERS:
            raise OptionError(f"unknown parameter {name!r}")
        values[name] = PARAMETERS[name].check(value)
    if any(name in LOCALIZER for name in changes):
        localizer_config(**localizer_values(values))
    return values


def refusal(current: dict, changes: dict, declaring: bool = False) -> str | None:
    """Why a parameter request is refused (None: accepted); while declaring, each value is
    checked alone (the set is checked once all are declared)."""
    changes = {name: value for name, value in changes.items() if name in PARAMETERS}
    try:
        if declaring:
            for name, value in changes.items():
                PARAMETERS[name].check(value)
        else:
            check_values(current, changes)
    except OptionError as exc:
        return str(exc)
    return None


def image_qos(name: str):
    """The image subscription's QoS: the named profile with history depth 1 (an unread frame
    is replaced by a newer one)."""
    from rclpy.qos import QoSProfile, qos_profile_sensor_data, qos_profile_system_default  # noqa: PLC0415

    profiles = {"sensor_data": qos_profile_sensor_data, "reliable": QoSProfile(depth=1),
                "system_default": qos_profile_system_default}
    qos = profiles[name]
    return QoSProfile(history=qos.history, depth=1, reliability=qos.reliability,
                      durability=qos.durability)


def localizer_values(values: dict) -> dict:
    """The localizer options among the node parameters ``values``."""
    return {name: values[name] for name in LOCALIZER if name in values}


def service_config(values: dict) -> ServiceConfig:
    """The service options among the node parameters ``values``, as a ServiceConfig."""
    return ServiceConfig(**{name: values[name] for name in SERVICE if name in values})


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    if isinstance(value, float):
        mantissa, e, exponent = repr(value).partition("e")  # YAML 1.1 floats need a dot
        return mantissa + ("" if "." in mantissa else ".0") + e + exponent
    return str(value)


def yaml_text() -> str:
    """``config/localize.yaml``: every parameter with its default and help as a comment."""
    lines = ["# Parameters of the s2dhm_localizer node, generated from ros2_s2dhm/ros/parameters.py",
             "# (python -m ros2_s2dhm.ros.parameters > config/localize.yaml); the localizer's come",
             "# from its config dataclasses. Use with:",
             "#   localizer_node --ros-args --params-file config/localize.yaml -p map_dir:=/path/map",
             "# or through launch/localize.launch.py (params_file argument).",
             f"{NODE_NAME}:", "  ros__parameters:"]
    for opt in PARAMETERS.values():
        note = opt.help + (f" ({opt.range_text()})" if opt.range_text() else "")
        if opt.read_only:
            note += " [read-only]"
        lines += textwrap.wrap(note, 96, initial_indent="    # ", subsequent_indent="    # ")
        lines.append(f"    {opt.name}: {_yaml_scalar(opt.default)}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(yaml_text())
