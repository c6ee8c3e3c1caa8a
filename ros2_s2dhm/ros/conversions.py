"""Conversions between ROS 2 messages and the library's types.

The one place where the node meets the library's conventions:

* ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` -> RGB ``uint8`` array (H, W, 3),
  decoded by ``cv_bridge`` when it is importable and works, else by ``rosbags-image``.
* ``sensor_msgs/CameraInfo`` -> :class:`~ros2_s2dhm.geometry.camera.Camera`
  (``plumb_bob``/``""`` -> ``OPENCV`` or ``PINHOLE``).
* world-to-camera :class:`~ros2_s2dhm.geometry.pose.Pose` + (6, 6) covariance in xi order
  (rotation first, left perturbation of world-to-camera) -> ``PoseWithCovarianceStamped`` of
  the camera (or of a base frame rigidly attached to it) in the map frame, covariance in ROS
  order (x, y, z, roll, pitch, yaw).

Quaternion order conversions (ROS ``x, y, z, w`` <-> files ``w, x, y, z``) go through
:mod:`ros2_s2dhm.geometry.rotation` only.

ROS camera frames are *optical* frames (z forward, x right, y down), the library's camera
convention, so no axis permutation is needed between the two.
"""
from __future__ import annotations

import logging
from types import SimpleNamespace

import numpy as np

from ros2_s2dhm.errors import CameraError, InputImageError
from ros2_s2dhm.geometry.camera import Camera
from ros2_s2dhm.geometry.pose import Pose
from ros2_s2dhm.geometry.rotation import (
    euler_rpy_to_matrix,
    matrix_to_quat_wxyz,
    quat_wxyz_to_matrix,
    wxyz_to_xyzw,
    xyzw_to_wxyz,
)

LOG = logging.getLogger(__name__)

#: Default variance floors: position (m^2) and rotation (rad^2). A published covariance is
#: never below these on its diagonal, so it is never zero.
DEFAULT_MIN_POSITION_VARIANCE = 1e-6
DEFAULT_MIN_ROTATION_VARIANCE = 1e-8

# --------------------------------------------------------------------------- images


def _cv_bridge_or_none():
    """A working ``cv_bridge.CvBridge`` (checked on a 2x2 image), or None."""
    try:
        from cv_bridge import CvBridge  # noqa: PLC0415  (optional dependency)

        bridge = CvBridge()
        probe = bridge.cv2_to_imgmsg(np.zeros((2, 2, 3), np.uint8), encoding="rgb8")
        bridge.imgmsg_to_cv2(probe, desired_encoding="rgb8")
        return bridge
    except Exception as exc:  # ImportError, or a cv_bridge built against another numpy
        LOG.debug("cv_bridge unavailable (%s); images are decoded by rosbags-image", exc)
        return None


_BRIDGE = _cv_bridge_or_none()


def image_backend() -> str:
    """Name of the decoder in use: ``"cv_bridge"`` or ``"rosbags-image"``."""
    return "cv_bridge" if _BRIDGE is not None else "rosbags-image"


def _encoding_info(encoding: str):
    """(bit depth, channels) of a ROS encoding, InputImageError if unknown."""
    from rosbags.image.image import ImageFormatError, to_cvtype  # noqa: PLC0415

    try:
        depth, _, _, channels = to_cvtype(encoding)
    except (ImageFormatError, KeyError) as exc:
        raise InputImageError(f"Image.encoding {encoding!r} is not a known image encoding") from exc
    return depth, channels


def _check_raw_image(msg) -> None:
    """Validate size fields and data length of a ``sensor_msgs/Image``."""
    if msg.width == 0 or msg.height == 0:
        raise InputImageError(f"Image has zero size (width={msg.width}, height={msg.height})")
    depth, channels = _encoding_info(msg.encoding)
    row_bytes = msg.width * channels * depth // 8
    if msg.step < row_bytes:
        raise InputImageError(
            f"Image.step {msg.step} is smaller than width*channels*bytes = {row_bytes} "
            f"for encoding {msg.encoding!r}")
    if len(msg.data) < msg.step * msg.height:
        raise InputImageError(
            f"Image.data is truncated: {len(msg.data)} bytes, expected step*height = "
            f"{msg.step * msg.height}")


def _as_rgb(image: np.ndarray, source_encoding: str) -> np.ndarray:
    """Convert a decoded array of ``source_encoding`` to contiguous RGB uint8."""
    from rosbags.image.image import ImageError, convert_color  # noqa: PLC0415

    try:
        rgb = convert_color(image, source_encoding, "rgb8")
    except (ImageError, KeyError) as exc:
        raise InputImageError(
            f"cannot convert image encoding {source_encoding!r} to rgb8: {exc}") from exc
    return np.ascontiguousarray(rgb)


def image_msg_to_rgb(msg) -> np.ndarray:
    """``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` -> RGB uint8 array (H, W, 3).

    Raises InputImageError naming the field for an unknown encoding, zero size, truncated or
    undecodable data.
    """
    compressed = hasattr(msg, "format")
    if compressed:
        return _compressed_to_rgb(msg)
    _check_raw_image(msg)
    if _BRIDGE is not None:
        try:
            return np.ascontiguousarray(_BRIDGE.imgmsg_to_cv2(msg, desired_encoding="rgb8"))
        except Exception as exc:  # CvBridgeError and the like
            raise InputImageError(f"Image ({msg.encoding!r}) cannot be decoded: {exc}") from exc
    from rosbags.image import image_to_cvimage  # noqa: PLC0415

    depth, channels = _encoding_info(msg.encoding)
    row_bytes = msg.width * channels * depth // 8
    data = msg.data
    if msg.step != row_bytes:  # drop row padding: rosbags-image expects packed rows
        rows = np.frombuffer(data, np.uint8, count=msg.step * msg.height)
        data = rows.reshape(msg.height, msg.step)[:, :row_bytes].tobytes()
    packed = SimpleNamespace(width=msg.width, height=msg.height, encoding=msg.encoding,
                             is_bigendian=bool(msg.is_bigendian),
                             data=memoryview(data)[:row_bytes * msg.height])
    try:
        return np.ascontiguousarray(image_to_cvimage(packed, "rgb8"))
    except Exception as exc:
        raise InputImageError(f"Image ({msg.encoding!r}) cannot be decoded: {exc}") from exc


def _compressed_to_rgb(msg) -> np.ndarray:
    if len(msg.data) == 0:
        raise InputImageError("CompressedImage.data is empty (zero-size image)")
    if _BRIDGE is not None:
        try:
            decoded = _BRIDGE.compressed_imgmsg_to_cv2(msg)
        except Exception as exc:
            raise InputImageError(
                f"CompressedImage (format {msg.format!r}) cannot be decoded: {exc}") from exc
    else:
        from rosbags.image import compressed_image_to_cvimage  # noqa: PLC0415

        try:
            decoded = compressed_image_to_cvimage(msg)
        except Exception as exc:  # truncated/corrupt data: OpenCV returns None
            decoded = None
            LOG.debug("imdecode failed: %s", exc)
    if decoded is None or decoded.size == 0:
        raise InputImageError(
            f"CompressedImage.data ({len(msg.data)} bytes, format {msg.format!r}) cannot be "
            "decoded: truncated or not an image")
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    source = {1: "mono8", 3: "bgr8", 4: "bgra8"}.get(channels)
    if source is None:
        raise InputImageError(f"CompressedImage decodes to {channels} channels")
    if decoded.dtype != np.uint8:
        source = source.replace("8", "16")
    if decoded.ndim == 3 and channels == 1:
        decoded = decoded[..., 0]
    return _as_rgb(decoded, source)


def rgb_to_image_msg(image: np.ndarray, header):
    """RGB uint8 array (H, W, 3) -> ``sensor_msgs/Image`` (``rgb8``) with ``header``."""
    from sensor_msgs.msg import Image  # noqa: PLC0415

    image = np.ascontiguousarray(image, dtype=np.uint8)
    if _BRIDGE is not None:
        msg = _BRIDGE.cv2_to_imgmsg(image, encoding="rgb8")
        msg.header = header
        return msg
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(image.shape[0]), int(image.shape[1])
    msg.encoding = "rgb8"
    msg.is_bigendian = 0
    msg.step = msg.width * 3
    msg.data = image.tobytes()
    return msg


# --------------------------------------------------------------------------- cameras


def camera_info_to_camera(msg, use_rectified: bool = False) -> Camera:
    """``sensor_msgs/CameraInfo`` -> Camera (OpenCV pixel convention, as ROS uses).

    ``plumb_bob``/``rational_polynomial`` with ``k3`` (and higher) zero -> ``OPENCV`` (``PINHOLE``
    when all coefficients are zero); no distortion model -> ``PINHOLE``. ``use_rectified``
    takes fx, fy, cx, cy from the projection matrix ``p`` (for ``image_rect`` topics).
    Raises CameraError naming the offending field.
    """
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        raise CameraError(f"CameraInfo.width/height must be > 0, got {width}x{height} "
                          "(is the camera publishing CameraInfo?)")
    if msg.binning_x > 1 or msg.binning_y > 1:
        raise CameraError(f"CameraInfo.binning_x/y = {msg.binning_x}/{msg.binning_y} is not "
                          "supported; publish full-resolution CameraInfo")
    roi = msg.roi
    if roi.width or roi.height or roi.x_offset or roi.y_offset:
        if (roi.x_offset, roi.y_offset) != (0, 0) or (roi.width, roi.height) != (width, height):
            raise CameraError(f"CameraInfo.roi {roi.width}x{roi.height}+{roi.x_offset}+"
                              f"{roi.y_offset} is not supported; publish the full image")
    if use_rectified:
        matrix, field = np.asarray(msg.p, dtype=np.float64), "p"
        if matrix.size != 12:
            raise CameraError(f"CameraInfo.p has {matrix.size} values, expected 12")
        matrix = matrix.reshape(3, 4)[:, :3]
    else:
        matrix, field = np.asarray(msg.k, dtype=np.float64), "k"
        if matrix.size != 9:
            raise CameraError(f"CameraInfo.k has {matrix.size} values, expected 9")
        matrix = matrix.reshape(3, 3)
    if not np.all(np.isfinite(matrix)):
        raise CameraError(f"CameraInfo.{field} has non-finite values: {matrix.ravel().tolist()}")
    fx, fy, cx, cy = matrix[0, 0], matrix[1, 1], matrix[0, 2], matrix[1, 2]
    if fx <= 0 or fy <= 0:
        raise CameraError(f"CameraInfo.{field}: focal lengths must be > 0, got fx={fx}, fy={fy} "
                          "(an uncalibrated camera publishes zeros)")
    if abs(matrix[0, 1]) > 1e-9 * fx:
        raise CameraError(f"CameraInfo.{field}[1] (skew) = {matrix[0, 1]} is not supported")
    if use_rectified:
        return Camera.from_pinhole(fx, fy, cx, cy, width, height)

    coeffs = np.asarray(msg.d, dtype=np.float64)
    model = msg.distortion_model
    if not np.all(np.isfinite(coeffs)):
        raise CameraError(f"CameraInfo.d has non-finite values: {coeffs.tolist()}")
    if model not in ("plumb_bob", "rational_polynomial", "") and np.any(coeffs != 0):
        raise CameraError(f"CameraInfo.distortion_model {model!r} is not supported; use "
                          "plumb_bob, or rectified images with use_rectified_intrinsics")
    if coeffs.size > 4 and np.any(coeffs[4:] != 0):
        raise CameraError(f"CameraInfo.d[4:] (k3 and higher) = {coeffs[4:].tolist()} are not "
                          "supported by the OPENCV model (k1, k2, p1, p2); use rectified images "
                          "with use_rectified_intrinsics")
    k = np.zeros(4)
    k[:min(4, coeffs.size)] = coeffs[:4]
    if not np.any(k):
        return Camera.from_pinhole(fx, fy, cx, cy, width, height)
    return Camera(model="OPENCV", width=width, height=height,
                  params=np.array([fx, fy, cx, cy, *k], dtype=np.float64))


def camera_to_camera_info(camera: Camera, stamp=None, frame_id: str = ""):
    """sensor_msgs/CameraInfo of ``camera`` (``plumb_bob``, D = k1, k2, p1, p2, 0; P = [K | 0])."""
    from sensor_msgs.msg import CameraInfo  # noqa: PLC0415

    K = camera.K
    P = np.zeros((3, 4))
    P[:, :3] = K
    msg = CameraInfo(width=camera.width, height=camera.height, distortion_model="plumb_bob",
                     d=[float(v) for v in camera.dist_coeffs] + [0.0],
                     k=[float(v) for v in K.reshape(-1)], r=[float(v) for v in np.eye(3).reshape(-1)],
                     p=[float(v) for v in P.reshape(-1)])
    msg.header.frame_id = frame_id
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


def camera_from_parameters(model: str, width: int, height: int, params) -> Camera:
    """Camera from node parameters (COLMAP model name and params, OpenCV pixel convention)."""
    params = np.asarray(list(params), dtype=np.float64)
    if not np.all(np.isfinite(params)):
        raise CameraError(f"parameter camera_params has non-finite values: {params.tolist()}")
    return Camera(model=model, width=int(width), height=int(height), params=params)


# --------------------------------------------------------------------------- poses


def transform_from_xyz_rpy(values) -> Pose:
    """``[x, y, z, roll, pitch, yaw]`` (pose of a child frame in its parent, ROS/URDF order)
    -> Pose mapping child coordinates to parent coordinates."""
    values = np.asarray(list(values), dtype=np.float64)
    if values.shape != (6,) or not np.all(np.isfinite(values)):
        raise ValueError(f"expected 6 finite numbers x y z roll pitch yaw, got {values.tolist()}")
    return Pose(R=euler_rpy_to_matrix(*values[3:]), t=values[:3])


def _skew(v: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -v[2], v[1]], [v[2], 0.0, -v[0]], [-v[1], v[0], 0.0]])


def adjoint(pose: Pose) -> np.ndarray:
    """SE(3) adjoint (6, 6) in xi order (rotation first): exp(Ad xi) = T exp(xi) T^-1."""
    ad = np.zeros((6, 6))
    ad[:3, :3] = pose.R
    ad[3:, 3:] = pose.R
    ad[3:, :3] = _skew(pose.t) @ pose.R
    return ad


def covariance_to_ros(world_to_camera: Pose, covariance_xi: np.ndarray,
                      frame_in_camera: Pose | None = None) -> np.ndarray:
    """Library covariance -> ROS covariance (6, 6) of a frame's pose in the map.

    ``covariance_xi``: (6, 6), xi = (omega, v), ``T_true = exp(xi) @ world_to_camera``.
    ``frame_in_camera``: Pose mapping the published frame's coordinates to camera coordinates
    (None: the camera itself). Result: covariance of (dp, dtheta) with ``p_true = p + dp`` (map
    axes) and ``R_true = exp(dtheta^) R`` (fixed map axes: roll, pitch, yaw about x, y, z), as
    ROS' ``PoseWithCovariance`` expects. The map-frame perturbation is
    ``eta = -Ad(camera_to_world) xi`` (since T^-1 exp(-xi) = exp(-Ad(T^-1) xi) T^-1), the same
    for every frame rigidly attached to the camera; then ``dp = eta_v - [p]x eta_omega``.
    """
    covariance_xi = np.asarray(covariance_xi, dtype=np.float64)
    camera_to_world = world_to_camera.inverse()
    frame_to_world = camera_to_world if frame_in_camera is None else camera_to_world @ frame_in_camera
    to_eta = -adjoint(camera_to_world)
    to_ros = np.zeros((6, 6))
    to_ros[:3, 3:] = np.eye(3)                      # dp = eta_v ...
    to_ros[:3, :3] = -_skew(frame_to_world.t)       # ... - p x eta_omega
    to_ros[3:, :3] = np.eye(3)                      # dtheta = eta_omega
    jacobian = to_ros @ to_eta
    return jacobian @ covariance_xi @ jacobian.T


def floor_covariance(covariance: np.ndarray | None,
                     min_position_variance: float = DEFAULT_MIN_POSITION_VARIANCE,
                     min_rotation_variance: float = DEFAULT_MIN_ROTATION_VARIANCE) -> np.ndarray:
    """Symmetrise and raise the diagonal to at least the floors (stays PSD: only adds a
    non-negative diagonal). None or non-finite input -> the floors alone."""
    floors = np.array([min_position_variance] * 3 + [min_rotation_variance] * 3, dtype=np.float64)
    if floors.min() <= 0:
        raise ValueError(f"covariance floors must be > 0, got {floors[[0, 3]].tolist()}")
    if covariance is None or not np.all(np.isfinite(covariance)):
        return np.diag(floors)
    covariance = 0.5 * (covariance + covariance.T)
    diagonal = np.diag(covariance)
    return covariance + np.diag(np.maximum(floors - diagonal, 0.0))


def published_covariance(result, frame_in_camera: Pose | None, missing_variances, floors
                         ) -> np.ndarray:
    """The 6x6 ROS-order covariance published with a result's pose: the Feature-PnP one (or
    ``missing_variances`` (position, rotation) without it), widened by 1/confidence, floored at
    ``floors`` (position m², rotation rad²)."""
    if result.covariance is not None and np.all(np.isfinite(result.covariance)):
        covariance = covariance_to_ros(result.pose, result.covariance, frame_in_camera)
    else:
        covariance = np.diag([missing_variances[0]] * 3 + [missing_variances[1]] * 3)
    covariance = covariance / max(float(result.confidence), 1e-3)  # less sure: wider
    return floor_covariance(covariance, *floors)


def pose_to_ros(world_to_camera: Pose, frame_in_camera: Pose | None = None):
    """(position (3,), quaternion xyzw (4,)) of the camera (or attached frame) in the map."""
    frame_to_world = world_to_camera.inverse()
    if frame_in_camera is not None:
        frame_to_world = frame_to_world @ frame_in_camera
    quat_xyzw = wxyz_to_xyzw(matrix_to_quat_wxyz(frame_to_world.R))
    return np.asarray(frame_to_world.t, dtype=np.float64), np.asarray(quat_xyzw, dtype=np.float64)


def to_pose_with_covariance_stamped(world_to_camera: Pose, covariance_ros: np.ndarray, stamp,
                                    frame_id: str, frame_in_camera: Pose | None = None):
    """Build a ``geometry_msgs/PoseWithCovarianceStamped`` (covariance already in ROS order)."""
    from geometry_msgs.msg import PoseWithCovarianceStamped  # noqa: PLC0415

    position, quat = pose_to_ros(world_to_camera, frame_in_camera)
    msg = PoseWithCovarianceStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    p.x, p.y, p.z = (float(v) for v in position)
    o.x, o.y, o.z, o.w = (float(v) for v in quat)
    msg.pose.covariance = [float(v) for v in np.asarray(covariance_ros, np.float64).ravel()]
    return msg


def ros_pose_to_world_to_camera(pose_msg, frame_in_camera: Pose | None = None) -> Pose:
    """``geometry_msgs/Pose`` of the camera (or attached frame) in the map -> world-to-camera."""
    quat_wxyz = xyzw_to_wxyz(np.array([pose_msg.orientation.x, pose_msg.orientation.y,
                                       pose_msg.orientation.z, pose_msg.orientation.w]))
    position = np.array([pose_msg.position.x, pose_msg.position.y, pose_msg.position.z])
    frame_to_world = Pose(R=quat_wxyz_to_matrix(quat_wxyz), t=position)
    camera_to_world = (frame_to_world if frame_in_camera is None
                       else frame_to_world @ frame_in_camera.inverse())
    return camera_to_world.inverse()


def to_transform_stamped(world_to_camera: Pose, stamp, parent: str, child: str,
                         frame_in_camera: Pose | None = None):
    """``geometry_msgs/TransformStamped`` parent (map) -> child (camera or base)."""
    from geometry_msgs.msg import TransformStamped  # noqa: PLC0415

    position, quat = pose_to_ros(world_to_camera, frame_in_camera)
    msg = TransformStamped()
    msg.header.stamp = stamp
    msg.header.frame_id = parent
    msg.child_frame_id = child
    tr, rot = msg.transform.translation, msg.transform.rotation
    tr.x, tr.y, tr.z = (float(v) for v in position)
    rot.x, rot.y, rot.z, rot.w = (float(v) for v in quat)
    return msg


def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
