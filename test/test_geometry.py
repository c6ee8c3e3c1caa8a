"""Geometry: rotations, pixel conventions, SE(3) poses, camera models and their Jacobians."""

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from ros2_s2dhm.errors import CameraError
from ros2_s2dhm.geometry import Camera, Pose, TorchPose, pose_error
from ros2_s2dhm.geometry.lie import se3_exp, se3_log, skew, so3_angle, so3_exp, so3_log
from ros2_s2dhm.geometry.pixels import feature_to_image, image_to_feature, scale_pixels
from ros2_s2dhm.geometry.rotation import (
    euler_rpy_to_matrix,
    matrix_to_euler_rpy,
    matrix_to_quat_wxyz,
    quat_wxyz_to_matrix,
    rotation_angle_deg,
    wxyz_to_xyzw,
    xyzw_to_wxyz,
)

CAMERAS = {
    "SIMPLE_PINHOLE": [150.0, 80.0, 60.0],
    "PINHOLE": [150.0, 140.0, 80.0, 60.0],
    "SIMPLE_RADIAL": [150.0, 80.0, 60.0, -0.08],
    "RADIAL": [150.0, 80.0, 60.0, -0.1, 0.03],
    "OPENCV": [150.0, 140.0, 80.0, 60.0, -0.1, 0.03, 0.002, -0.003],
}


def _camera(model):
    return Camera(model, 160, 120, CAMERAS[model])


def _random_points(rng, n=50):
    """Camera points inside a ~60 deg field of view, depth 1-10."""
    z = rng.uniform(1, 10, n)
    xy = rng.uniform(-0.5, 0.5, (n, 2)) * z[:, None]
    return np.column_stack([xy, z])


def _angles():
    return [0.0, 1e-9, 1e-6, 1e-3, 0.3, 2.0, np.pi - 1e-6, np.pi]


# --- rotations ---------------------------------------------------------------------------------
def test_quaternion_round_trip_and_convention():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(20, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    R = quat_wxyz_to_matrix(q)
    np.testing.assert_allclose(matrix_to_quat_wxyz(R), q, atol=1e-12)
    # (w, x, y, z) = (cos 45, 0, 0, sin 45) is +90 deg about z.
    np.testing.assert_allclose(quat_wxyz_to_matrix([np.sqrt(0.5), 0, 0, np.sqrt(0.5)]),
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(xyzw_to_wxyz(wxyz_to_xyzw(q)), q)
    np.testing.assert_allclose(matrix_to_quat_wxyz(quat_wxyz_to_matrix(-q)), q, atol=1e-12)  # w >= 0


def test_euler_and_angle():
    R = euler_rpy_to_matrix(0.1, -0.2, 0.3)
    expected = Rotation.from_euler("z", 0.3).as_matrix() @ Rotation.from_euler("y", -0.2).as_matrix() \
        @ Rotation.from_euler("x", 0.1).as_matrix()
    np.testing.assert_allclose(R, expected, atol=1e-12)
    np.testing.assert_allclose(matrix_to_euler_rpy(R), (0.1, -0.2, 0.3), atol=1e-12)
    assert rotation_angle_deg(euler_rpy_to_matrix(0, 0, np.radians(30))) == pytest.approx(30.0)
    assert rotation_angle_deg(np.eye(3)) == pytest.approx(0.0, abs=1e-12)


# --- pixels ------------------------------------------------------------------------------------
def test_pixel_conventions_numpy_and_torch():
    uv = np.array([[0.0, 0.0], [3.0, 7.0]])
    # Halving the image: pixel 0 centre -> -0.25, pixel 1 centre -> 0.25 (their mean is 0).
    np.testing.assert_allclose(scale_pixels(uv, 0.5), [[-0.25, -0.25], [1.25, 3.25]])
    np.testing.assert_allclose(scale_pixels(uv, (0.5, 2.0)), [[-0.25, 0.5], [1.25, 14.5]])
    np.testing.assert_allclose(image_to_feature(np.array([1.5, 5.5]), 4), [0.0, 1.0])
    np.testing.assert_allclose(feature_to_image(image_to_feature(uv, 4), 4), uv)
    t = torch.tensor(uv, dtype=torch.float32)
    out = scale_pixels(t, (0.5, 2.0))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), scale_pixels(uv, (0.5, 2.0)))


# --- lie groups and poses ----------------------------------------------------------------------
@pytest.mark.parametrize("angle", _angles())
def test_exp_log_round_trip(angle):
    rng = np.random.default_rng(1)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    xi = np.concatenate([axis * angle, rng.normal(size=3) * 5])
    pose = Pose.exp(xi)
    np.testing.assert_allclose(pose.R, Rotation.from_rotvec(axis * angle).as_matrix(), atol=1e-12)
    back = Pose.exp(pose.log())
    np.testing.assert_allclose(back.matrix(), pose.matrix(), atol=1e-10)
    if angle < np.pi - 1e-3:  # the twist is unique away from pi
        np.testing.assert_allclose(pose.log(), xi, atol=1e-10)
    assert float(so3_angle(torch.from_numpy(pose.R.copy()))) == pytest.approx(angle, abs=1e-12)


def test_torch_lie_batched_float32_and_grad():
    rng = np.random.default_rng(2)
    xi = torch.tensor(rng.normal(size=(7, 6)), dtype=torch.float64, requires_grad=True)
    R, t = se3_exp(xi)
    np.testing.assert_allclose(so3_exp(xi[:, :3]).detach(), R.detach(), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(R).detach(), np.ones(7), atol=1e-12)
    a, b = torch.randn(3, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    np.testing.assert_allclose(skew(a) @ b, torch.linalg.cross(a, b), atol=1e-12)
    # Derivative of exp(xi) p at xi = 0 is [-[p]_x, I] (rotation first).
    p = torch.randn(3, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda x: se3_exp(x)[0] @ p + se3_exp(x)[1],
                                           torch.zeros(6, dtype=torch.float64))
    np.testing.assert_allclose(J, torch.cat([-skew(p), torch.eye(3, dtype=torch.float64)], 1), atol=1e-12)
    small = torch.tensor([[1e-4, -2e-4, 3e-5, 0.1, 0.2, 0.3]], dtype=torch.float32)
    R32, t32 = se3_exp(small)
    assert R32.dtype == torch.float32
    np.testing.assert_allclose(se3_log(R32, t32).numpy(), small.numpy(), atol=1e-6)
    np.testing.assert_allclose(so3_log(so3_exp(xi[:, :3])).detach(), xi[:, :3].detach(), atol=1e-10)


def test_pose_composition_inverse_transform():
    rng = np.random.default_rng(3)
    a = Pose.exp(rng.normal(size=6))
    b = Pose.exp(rng.normal(size=6))
    x = rng.normal(size=(10, 3))
    np.testing.assert_allclose((a @ b).transform(x), a.transform(b.transform(x)), atol=1e-12)
    np.testing.assert_allclose((a @ a.inverse()).matrix(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(a.transform(a.center), 0, atol=1e-12)
    np.testing.assert_allclose(Pose.from_center(a.R, a.center).t, a.t, atol=1e-12)
    np.testing.assert_allclose(Pose.from_matrix(a.matrix()).R, a.R)
    q = a.quaternion_wxyz()
    assert q[0] >= 0
    np.testing.assert_allclose(Pose.from_quaternion(q, a.t).R, a.R, atol=1e-12)
    assert Pose.from_quaternion(q, a.t) == Pose(Pose.from_quaternion(q, a.t).R, a.t)
    with pytest.raises(ValueError):
        Pose(np.eye(3), [0, 0])


def test_pose_error():
    truth = Pose.from_center(euler_rpy_to_matrix(0.1, 0.2, 0.3), [1.0, 2.0, 3.0])
    est = Pose.from_center(euler_rpy_to_matrix(0, 0, np.radians(5)) @ truth.R, [1.0, 2.0, 3.5])
    dt, dr = pose_error(est, truth)
    assert dt == pytest.approx(0.5)
    assert dr == pytest.approx(5.0)
    assert pose_error(truth, truth) == pytest.approx((0.0, 0.0), abs=1e-9)


def test_torch_pose_batched_matches_the_host_pose():
    """TorchPose: batched exp, composition, transform, centre and error on tensors agree with
    the host Pose applied pose by pose; to_pose copies one pose back; bad shapes are refused."""
    rng = np.random.default_rng(5)
    xi_a, xi_b = rng.normal(size=(4, 6)) * 0.5, rng.normal(size=(4, 6)) * 0.5
    a, b = TorchPose.exp(torch.tensor(xi_a)), TorchPose.exp(torch.tensor(xi_b))
    assert a.shape == (4,)
    x = rng.normal(size=(4, 7, 3))
    moved = (a @ b).transform(torch.tensor(x)).numpy()
    dt, dr = a.error_to(b)
    for i in range(4):
        pa, pb = Pose.exp(xi_a[i]), Pose.exp(xi_b[i])
        np.testing.assert_allclose(moved[i], (pa @ pb).transform(x[i]), atol=1e-12)
        np.testing.assert_allclose(a.center[i].numpy(), pa.center, atol=1e-12)
        assert (float(dt[i]), float(dr[i])) == pytest.approx(pose_error(pa, pb), rel=1e-9)
        one = TorchPose(a.R[i], a.t[i])
        assert one.shape == () and one.to_pose() == Pose(one.R.numpy(), one.t.numpy())
        np.testing.assert_allclose(one.transform(torch.tensor(x[i])).numpy(), pa.transform(x[i]), atol=1e-12)
    host = Pose.exp(xi_a[0])
    assert TorchPose.from_pose(host).to_pose() == host
    small = TorchPose.from_pose(Pose.exp([1e-9, 0, 0, 0, 0, 0]))  # accurate near 0
    assert float(small.error_to(TorchPose.from_pose(Pose.identity()))[1]) == pytest.approx(
        np.degrees(1e-9), rel=1e-6)
    with pytest.raises(ValueError, match="unbatched"):
        a.to_pose()
    with pytest.raises(ValueError, match="same leading"):
        TorchPose(a.R, a.t[:2])


# --- cameras -----------------------------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(CAMERAS))
def test_projection_jacobian_matches_autograd(model):
    camera = _camera(model)
    p = torch.tensor(_random_points(np.random.default_rng(4)), dtype=torch.float64)
    uv, J, _ = camera.project_jacobian(p)
    uv_ref, _ = camera.project(p, check_bounds=False)
    J_auto = torch.autograd.functional.jacobian(lambda x: camera.project(x, check_bounds=False)[0].sum(0), p)
    np.testing.assert_allclose(uv, uv_ref, atol=1e-12)
    np.testing.assert_allclose(J, J_auto.permute(1, 0, 2), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("model", sorted(CAMERAS))
def test_project_unproject_round_trip_and_opencv(model):
    camera = _camera(model)
    pts = _random_points(np.random.default_rng(5))
    uv, valid = camera.project_np(pts, check_bounds=False)
    assert valid.all()
    rays = camera.unproject_np(uv)
    np.testing.assert_allclose(rays * pts[:, 2:], pts, atol=1e-9)
    uv_cv, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), camera.K, camera.dist_coeffs)
    np.testing.assert_allclose(uv_cv[:, 0], uv, atol=1e-8)
    # float32 on the torch path.
    rays32 = camera.unproject(torch.tensor(uv, dtype=torch.float32))
    assert rays32.dtype == torch.float32
    np.testing.assert_allclose(rays32.numpy(), rays, atol=1e-5)


def test_project_validity():
    camera = _camera("PINHOLE")
    p = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [10.0, 0.0, 1.0]])
    _, valid = camera.project(p)
    assert valid.tolist() == [True, False, False]
    _, valid = camera.project(p, check_bounds=False)
    assert valid.tolist() == [True, False, True]
    # Strong barrel distortion folds far points back into the image: they must be invalid.
    barrel = Camera("RADIAL", 160, 120, [150.0, 80.0, 60.0, -0.3, 0.0])
    assert barrel.max_radius2() == pytest.approx(1 / 0.9)
    far = torch.tensor([[2.0, 0.0, 1.0], [0.5, 0.0, 1.0]], dtype=torch.float64)
    uv, valid = barrel.project(far, check_bounds=False)
    assert barrel.in_image(uv)[0] and valid.tolist() == [False, True]
    assert _camera("PINHOLE").max_radius2() == float("inf")


def test_colmap_conversion_and_validation():
    cam = Camera.from_colmap("SIMPLE_RADIAL", 100, 80, [90.0, 50.0, 40.0, 0.01])
    np.testing.assert_allclose(cam.params, [90.0, 49.5, 39.5, 0.01])
    model, w, h, params = cam.to_colmap()
    assert (model, w, h) == ("SIMPLE_RADIAL", 100, 80)
    np.testing.assert_allclose(params, [90.0, 50.0, 40.0, 0.01])
    np.testing.assert_allclose(cam.K, [[90, 0, 49.5], [0, 90, 39.5], [0, 0, 1]])
    np.testing.assert_allclose(cam.dist_coeffs, [0.01, 0, 0, 0])
    with pytest.raises(CameraError, match="not supported"):
        Camera("FISHEYE", 10, 10, [1, 2, 3])
    with pytest.raises(CameraError, match="expects 4"):
        Camera("PINHOLE", 10, 10, [1, 2, 3])
    with pytest.raises(CameraError, match="finite"):
        Camera("PINHOLE", 10, 10, [1, np.nan, 3, 4])
    with pytest.raises(CameraError, match="width/height"):
        Camera("PINHOLE", 0, 10, [1, 1, 3, 4])


@pytest.mark.parametrize("model", sorted(CAMERAS))
def test_scaled_camera_matches_resized_pixels(model):
    camera = _camera(model)
    pts = _random_points(np.random.default_rng(6))
    uv, _ = camera.project_np(pts, check_bounds=False)
    for sx, sy in [(0.5, 0.5), (0.25, 0.3)]:
        small = camera.scaled(sx, sy)
        uv_small, _ = small.project_np(pts, check_bounds=False)
        np.testing.assert_allclose(uv_small, scale_pixels(uv, (sx, sy)), atol=1e-9)
    assert camera.scaled(0.5).size == (80, 60)
    assert camera.scaled(0.25, width=41, height=30).size == (41, 30)
    assert camera.scaled(0.5).model == model
