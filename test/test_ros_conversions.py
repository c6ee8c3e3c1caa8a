"""Unit tests of ros2_s2dhm.ros.conversions (no ROS graph needed, only message classes)."""
import cv2
import numpy as np
import pytest

from geometry_msgs.msg import Pose as PoseMsg  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from ros2_s2dhm.errors import CameraError, InputImageError  # noqa: E402
from ros2_s2dhm.geometry.pose import Pose  # noqa: E402
from ros2_s2dhm.geometry.rotation import matrix_to_rotvec  # noqa: E402
from ros2_s2dhm.ros import conversions as conv  # noqa: E402
from ros2_s2dhm.service import check_image_size  # noqa: E402

RNG = np.random.default_rng(0)


def raw_msg(array, encoding, step=None):
    msg = Image()
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding
    row = array[0].nbytes
    msg.step = step or row
    data = array.reshape(msg.height, row // array.itemsize).view(np.uint8).reshape(msg.height, row)
    data = np.pad(data, ((0, 0), (0, msg.step - row)))
    msg.data = data.tobytes()
    return msg


def compressed_msg(bgr, ext=".jpg"):
    msg = CompressedImage()
    msg.format = ext.strip(".")
    msg.data = cv2.imencode(ext, bgr)[1].tobytes()
    return msg


def camera_info(k=(100.0, 0, 31.5, 0, 90.0, 23.5, 0, 0, 1), d=(0.0,) * 5, size=(64, 48),
                model="plumb_bob"):
    msg = CameraInfo()
    msg.width, msg.height = size
    msg.k = [float(v) for v in k]
    msg.d = [float(v) for v in d]
    msg.distortion_model = model
    msg.p = [100.0, 0, 30.0, 0, 0, 90.0, 20.0, 0, 0, 0, 1, 0]
    return msg


# ----------------------------------------------------------------------------- images

def test_raw_encodings_to_rgb():
    rgb = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    assert np.array_equal(conv.image_msg_to_rgb(raw_msg(rgb, "rgb8")), rgb)
    assert np.array_equal(conv.image_msg_to_rgb(raw_msg(rgb[..., ::-1].copy(), "bgr8")), rgb)
    # rows padded to a larger step are unpadded, not misread
    assert np.array_equal(conv.image_msg_to_rgb(raw_msg(rgb, "rgb8", step=7 * 3 + 5)), rgb)
    gray = RNG.integers(0, 256, (6, 7), dtype=np.uint8)
    out = conv.image_msg_to_rgb(raw_msg(gray, "mono8"))
    assert out.shape == (6, 7, 3) and np.array_equal(out[..., 1], gray)
    out16 = conv.image_msg_to_rgb(raw_msg(np.full((6, 7), 65535, np.uint16), "mono16"))
    assert out16.dtype == np.uint8 and np.all(out16 == 255)


def test_compressed_to_rgb():
    rgb = RNG.integers(0, 256, (16, 20, 3), dtype=np.uint8)
    out = conv.image_msg_to_rgb(compressed_msg(rgb[..., ::-1].copy(), ".png"))
    assert np.array_equal(out, rgb)
    jpeg = conv.image_msg_to_rgb(compressed_msg(np.full((16, 20, 3), (0, 0, 255), np.uint8)))
    assert jpeg.shape == (16, 20, 3) and jpeg[8, 10, 0] > 200 and jpeg[8, 10, 2] < 50  # red
    gray_png = compressed_msg(np.full((8, 8), 77, np.uint8), ".png")
    assert np.all(conv.image_msg_to_rgb(gray_png) == 77)


@pytest.mark.parametrize("case, expected", [
    ("unknown_encoding", "encoding"),
    ("float_encoding", "rgb8"),
    ("zero_size", "zero size"),
    ("truncated", "truncated"),
    ("compressed_empty", "empty"),
    ("compressed_truncated", "cannot be decoded"),
])
def test_bad_images_raise_named_errors(case, expected):
    rgb = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    msg = raw_msg(rgb, "rgb8")
    if case == "unknown_encoding":
        msg.encoding = "not_an_encoding"
    elif case == "float_encoding":
        msg = raw_msg(np.zeros((6, 7), np.float32), "32FC1")
    elif case == "zero_size":
        msg.width = 0
    elif case == "truncated":
        msg.data = bytes(msg.data)[:-5]
    elif case == "compressed_empty":
        msg = CompressedImage(format="jpeg")
    elif case == "compressed_truncated":
        msg = compressed_msg(rgb, ".png")
        msg.data = bytes(msg.data)[:30]
    with pytest.raises(InputImageError, match=expected):
        conv.image_msg_to_rgb(msg)


def test_image_size_must_match_camera():
    camera = conv.camera_info_to_camera(camera_info())
    check_image_size(np.zeros((48, 64, 3), np.uint8), camera)
    with pytest.raises(InputImageError, match="32x48.*64x48"):
        check_image_size(np.zeros((48, 32, 3), np.uint8), camera)


def test_rgb_to_image_msg_round_trip():
    rgb = RNG.integers(0, 256, (5, 9, 3), dtype=np.uint8)
    msg = conv.rgb_to_image_msg(rgb, Image().header)
    assert msg.encoding == "rgb8" and np.array_equal(conv.image_msg_to_rgb(msg), rgb)


# ----------------------------------------------------------------------------- cameras

def test_camera_info_models():
    pinhole = conv.camera_info_to_camera(camera_info())
    assert pinhole.model == "PINHOLE" and (pinhole.width, pinhole.height) == (64, 48)
    assert np.allclose(pinhole.params, [100, 90, 31.5, 23.5])
    opencv = conv.camera_info_to_camera(camera_info(d=(-0.1, 0.01, 0.001, -0.002, 0.0)))
    assert opencv.model == "OPENCV"
    assert np.allclose(opencv.params, [100, 90, 31.5, 23.5, -0.1, 0.01, 0.001, -0.002])
    no_model = conv.camera_info_to_camera(camera_info(d=(), model=""))
    assert no_model.model == "PINHOLE"
    rect = conv.camera_info_to_camera(camera_info(d=(-0.3, 0.1, 0, 0, 0.05)), use_rectified=True)
    assert rect.model == "PINHOLE" and np.allclose(rect.params, [100, 90, 30, 20])


@pytest.mark.parametrize("kwargs, field", [
    ({"k": (np.nan, 0, 31.5, 0, 90, 23.5, 0, 0, 1)}, r"CameraInfo\.k"),
    ({"k": (0.0,) * 9}, r"CameraInfo\.k.*focal"),
    ({"size": (0, 0)}, r"CameraInfo\.width"),
    ({"d": (0.1, 0, 0, 0, 0.2)}, r"CameraInfo\.d\[4:\]"),
    ({"d": (0.1, np.inf, 0, 0, 0)}, r"CameraInfo\.d"),
    ({"model": "equidistant", "d": (0.1, 0.1, 0.1, 0.1)}, r"distortion_model"),
])
def test_camera_info_validation_names_the_field(kwargs, field):
    with pytest.raises(CameraError, match=field):
        conv.camera_info_to_camera(camera_info(**kwargs))


def test_camera_from_parameters():
    camera = conv.camera_from_parameters("PINHOLE", 64, 48, [50.0, 50.0, 31.5, 23.5])
    assert camera.K[0, 0] == 50.0
    with pytest.raises(CameraError):
        conv.camera_from_parameters("PINHOLE", 64, 48, [0.0, 0.0, 0.0, 0.0])


# ----------------------------------------------------------------------------- poses

def random_pose(scale=1.0):
    return Pose.exp(np.concatenate([RNG.normal(size=3), scale * RNG.normal(size=3) * 5]))


def test_pose_message_round_trip_and_quaternion_order():
    world_to_camera = random_pose()
    msg = conv.to_pose_with_covariance_stamped(world_to_camera, np.eye(6), Image().header.stamp,
                                               "map")
    p, o = msg.pose.pose.position, msg.pose.pose.orientation
    assert np.allclose([p.x, p.y, p.z], world_to_camera.center)
    # ROS carries x, y, z, w: w is last and equals the library's first component (sign-fixed)
    q_cam_in_map = world_to_camera.inverse().quaternion_wxyz()
    assert np.allclose([o.w, o.x, o.y, o.z], q_cam_in_map)
    back = conv.ros_pose_to_world_to_camera(msg.pose.pose)
    assert np.allclose(back.R, world_to_camera.R) and np.allclose(back.t, world_to_camera.t)
    base_to_camera = conv.transform_from_xyz_rpy([1.0, 0.2, 1.5, -np.pi / 2, 0.0, -np.pi / 2])
    base_msg = PoseMsg()
    position, quat = conv.pose_to_ros(world_to_camera, base_to_camera.inverse())
    base_msg.position.x, base_msg.position.y, base_msg.position.z = position
    base_msg.orientation.x, base_msg.orientation.y, base_msg.orientation.z, base_msg.orientation.w = quat
    base_in_map = world_to_camera.inverse() @ base_to_camera.inverse()
    assert np.allclose(position, base_in_map.t)
    back = conv.ros_pose_to_world_to_camera(base_msg, base_to_camera.inverse())
    assert np.allclose(back.t, world_to_camera.t) and np.allclose(back.R, world_to_camera.R)


def numeric_ros_jacobian(world_to_camera, frame_in_camera, eps=1e-6):
    """d(dp, dtheta)/d(xi) by central differences of the actual pose perturbation."""
    def ros_error(xi):
        perturbed = Pose.exp(xi) @ world_to_camera
        nominal = world_to_camera.inverse() if frame_in_camera is None else \
            world_to_camera.inverse() @ frame_in_camera
        moved = perturbed.inverse() if frame_in_camera is None else \
            perturbed.inverse() @ frame_in_camera
        return np.concatenate([moved.t - nominal.t, matrix_to_rotvec(moved.R @ nominal.R.T)])
    jac = np.zeros((6, 6))
    for i in range(6):
        step = np.zeros(6)
        step[i] = eps
        jac[:, i] = (ros_error(step) - ros_error(-step)) / (2 * eps)
    return jac


@pytest.mark.parametrize("with_base", [False, True])
def test_covariance_rotated_into_map_frame(with_base):
    world_to_camera = random_pose()
    frame_in_camera = (conv.transform_from_xyz_rpy([0.3, -1.2, 0.5, 0.4, -0.2, 1.0])
                       if with_base else None)
    a = RNG.normal(size=(6, 6))
    cov_xi = a @ a.T * 1e-3
    cov_ros = conv.covariance_to_ros(world_to_camera, cov_xi, frame_in_camera)
    jac = numeric_ros_jacobian(world_to_camera, frame_in_camera)
    assert np.allclose(cov_ros, jac @ cov_xi @ jac.T, rtol=1e-5, atol=1e-9)
    assert np.allclose(cov_ros, cov_ros.T)


def test_covariance_axis_example():
    """Camera looking along map +x (optical z -> map x): uncertainty along the optical axis
    (v_z) becomes map-x position variance; roll about the optical axis becomes map roll."""
    R_cam_in_map = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    world_to_camera = Pose.from_center(R_cam_in_map.T, [0.0, 0.0, 0.0])
    cov_xi = np.diag([1e-8, 1e-8, 4e-4, 1e-8, 1e-8, 9.0])  # (omega, v): big v_z, big omega_z
    cov_ros = conv.covariance_to_ros(world_to_camera, cov_xi)
    assert np.isclose(cov_ros[0, 0], 9.0) and np.isclose(cov_ros[3, 3], 4e-4)
    assert cov_ros[1, 1] < 1e-6 and cov_ros[2, 2] < 1e-6 and cov_ros[5, 5] < 1e-6


def test_covariance_never_zero():
    floors = (1e-6, 1e-8)
    for cov in (None, np.zeros((6, 6)), np.full((6, 6), np.nan)):
        out = conv.floor_covariance(cov, *floors)
        assert np.all(np.diag(out) >= np.repeat(floors, 3)) and np.any(out != 0)
    a = RNG.normal(size=(6, 6))
    cov = a @ a.T
    assert np.allclose(conv.floor_covariance(cov, *floors), cov)  # large enough: unchanged
    tiny = np.diag([1e-12] * 6)
    out = conv.floor_covariance(tiny, *floors)
    assert np.all(np.linalg.eigvalsh(out) > 0)
    with pytest.raises(ValueError):
        conv.floor_covariance(cov, 0.0, 1e-8)
