"""Feature-metric PnP on feature maps rendered from a known scene of planes."""

import math

import numpy as np
import pytest
import torch

from ros2_s2dhm.errors import CameraError
from ros2_s2dhm.feature_sampling import FeatureSampler, feature_gradients, interpolate_bilinear
from ros2_s2dhm.geometry import Camera, Pose, pose_error
from ros2_s2dhm.geometry.rotation import euler_rpy_to_matrix, rotvec_to_matrix
from ros2_s2dhm.refine import (
    LOSSES,
    FeatureMetricPnP,
    RefineConfig,
    robust_loss,
)

# Planes n . X = d in world coordinates (y down, camera looking along +z): back wall, floor,
# left and right walls, so depths span ~4-18 m.
PLANES = [((0, 0, 1), 18.0), ((0, 1, 0), 2.5), ((1, 0, 0), -5.0), ((1, 0, 0), 6.0)]
CHANNELS = 16


def _feature_function(seed=0):
    """Smooth L2-normalised features of world points: sums of sinusoids, wavelengths 1.5-6 m."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(2, CHANNELS, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    freqs = 2 * np.pi / rng.uniform(1.5, 6.0, size=(2, CHANNELS, 1)) * directions
    phases = rng.uniform(0, 2 * np.pi, size=(2, CHANNELS))

    def features(X):  # [..., 3] -> [..., C]
        f = np.sin(X @ freqs[0].T + phases[0]) + 0.5 * np.sin(X @ freqs[1].T + phases[1])
        return f / np.linalg.norm(f, axis=-1, keepdims=True)

    return features


def _intersect(camera, pose, uv):
    """World points [N, 3] seen at pixels uv [N, 2] (nearest plane in front of the camera)."""
    rays = camera.unproject_np(uv) @ pose.R  # world directions (rows: R^T ray)
    origin = pose.center
    best = np.full(len(uv), np.inf)
    for normal, d in PLANES:
        n = np.asarray(normal, float)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (d - origin @ n) / (rays @ n)
        best = np.where((s > 0) & (s < best), s, best)
    assert np.all(np.isfinite(best))
    return origin + best[:, None] * rays


def _scene(camera, pose_gt, n_points=300, seed=0):
    """Query feature map [C, H, W] rendered at pose_gt, 3D points and their exact reference features."""
    W, H = camera.width, camera.height
    grid = np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1).reshape(-1, 2).astype(float)
    features = _feature_function(seed)
    fmap = features(_intersect(camera, pose_gt, grid)).reshape(H, W, CHANNELS).transpose(2, 0, 1)
    fmap = torch.tensor(np.ascontiguousarray(fmap), dtype=torch.float32)
    rng = np.random.default_rng(seed + 1)
    uv = rng.uniform([6, 6], [W - 7, H - 7], size=(n_points, 2))
    points = _intersect(camera, pose_gt, uv)
    ref, valid = interpolate_bilinear(fmap, torch.tensor(uv, dtype=torch.float32))
    assert valid.all()
    return fmap, torch.tensor(points), ref


def _perturb(pose, angle_deg, dist_m, seed):
    rng = np.random.default_rng(seed)
    axis, direction = rng.normal(size=3), rng.normal(size=3)
    axis *= math.radians(angle_deg) / np.linalg.norm(axis)
    direction *= dist_m / np.linalg.norm(direction)
    return Pose.from_center(rotvec_to_matrix(axis) @ pose.R, pose.center + direction)


PINHOLE = Camera.from_pinhole(100.0, 100.0, 63.5, 47.5, 128, 96)
DISTORTED = Camera("OPENCV", 128, 96, [100.0, 98.0, 64.0, 47.0, -0.08, 0.01, 0.001, -0.001])
POSE_GT = Pose.from_center(euler_rpy_to_matrix(0.03, -0.05, 0.02), [0.3, -0.2, 0.5])


@pytest.fixture(scope="module")
def scene():
    return _scene(PINHOLE, POSE_GT)


def _check_converges(fmap, points, ref, camera, config, seeds=(0, 1)):
    for seed in seeds:
        init = _perturb(POSE_GT, 2.0, 0.5, seed)
        dt0, dr0 = pose_error(init, POSE_GT)
        assert dr0 == pytest.approx(2.0) and dt0 == pytest.approx(0.5)
        result = FeatureMetricPnP(config).refine(init, points, ref, fmap, camera)
        dt, dr = pose_error(result.pose, POSE_GT)
        assert dt < 0.01 and dr < 0.05, (config.loss, seed, dt, dr, result.reason, result.iterations)
        assert result.final_cost < result.initial_cost
        assert all(b <= a for a, b in zip(result.cost_history, result.cost_history[1:]))
        assert result.reason in ("converged_cost", "converged_step")
        assert result.num_points == len(points)


@pytest.mark.parametrize("loss", LOSSES)
def test_converges_from_perturbed_pose_every_loss(scene, loss):
    fmap, points, ref = scene
    _check_converges(fmap, points, ref, PINHOLE, RefineConfig(loss=loss))


def test_converges_with_sobel_gradients_and_distortion():
    fmap, points, ref = _scene(DISTORTED, POSE_GT, n_points=250, seed=3)
    _check_converges(fmap, points, ref, DISTORTED, RefineConfig(loss="huber", gradient="sobel"), seeds=(2,))


def test_truth_is_a_fixed_point_and_covariance_is_spd(scene):
    fmap, points, ref = scene
    result = FeatureMetricPnP(RefineConfig(loss="squared")).refine(POSE_GT, points, ref, fmap, PINHOLE)
    dt, dr = pose_error(result.pose, POSE_GT)
    assert dt < 1e-4 and dr < 1e-3
    assert result.initial_cost < 1e-8
    init = _perturb(POSE_GT, 1.0, 0.2, 5)
    result = FeatureMetricPnP(RefineConfig(loss="cauchy")).refine(init, points, ref, fmap, PINHOLE)
    cov = result.covariance
    assert cov.shape == (6, 6)
    np.testing.assert_allclose(cov, cov.T, rtol=0, atol=1e-12 * np.abs(cov).max())
    assert np.all(np.linalg.eigvalsh(cov) > 0) and np.all(np.isfinite(cov))


def test_the_pose_and_camera_stay_on_the_device_between_steps(scene, monkeypatch):
    """Feature-PnP keeps its pose as a TorchPose on the feature map's device: one copy back
    to the host per refinement (the result), the camera's parameters copied once, however
    many steps it takes."""
    from ros2_s2dhm.geometry import TorchPose
    fmap, points, ref = scene
    init = _perturb(POSE_GT, 2.0, 0.5, 0)
    camera = Camera.from_pinhole(*PINHOLE.params, PINHOLE.width, PINHOLE.height)  # no cache yet
    copies = {"pose": 0, "camera": 0}
    to_pose, params = TorchPose.to_pose, Camera.opencv_params

    def counted_to_pose(self):
        copies["pose"] += 1
        return to_pose(self)

    def counted_params(self):
        copies["camera"] += 1
        return params(self)

    monkeypatch.setattr(TorchPose, "to_pose", counted_to_pose)
    monkeypatch.setattr(Camera, "opencv_params", counted_params)
    result = FeatureMetricPnP(RefineConfig(loss="cauchy")).refine(init, points, ref, fmap, camera)
    # the camera: one host read (has_distortion) and one copy of its parameters to the device
    assert result.iterations >= 3 and copies == {"pose": 1, "camera": 2}
    assert pose_error(result.pose, POSE_GT)[0] < 0.01


def test_only_accepted_steps_are_linearised(scene, monkeypatch):
    """A step is first costed from the features alone; the Jacobians and the 4x4 gradient
    gathers are paid once per accepted step (and once at the start), not for the rejected
    ones, and the pose is the one of linearising every step."""
    from ros2_s2dhm.refine import _Problem
    fmap, points, ref = scene
    init = _perturb(POSE_GT, 2.0, 0.5, 0)
    # no convergence test: it steps on at the minimum, where steps are rejected
    config = RefineConfig(loss="cauchy", rtol_cost=0.0, tol_rotation_deg=0.0, tol_translation_m=0.0,
                          max_iterations=30)
    calls = {"cost": 0, "linearize": 0}
    cost, linearize = _Problem.cost, _Problem.linearize

    def counted(name, method):
        def wrapped(self, *args):
            calls[name] += 1
            return method(self, *args)
        return wrapped

    monkeypatch.setattr(_Problem, "cost", counted("cost", cost))
    monkeypatch.setattr(_Problem, "linearize", counted("linearize", linearize))
    result = FeatureMetricPnP(config).refine(init, points, ref, fmap, PINHOLE)
    assert calls == {"cost": result.iterations, "linearize": result.num_accepted + 1}
    assert result.num_accepted < result.iterations  # some steps were rejected
    monkeypatch.setattr(_Problem, "cost", lambda self, pose, penalty: linearize(self, pose, penalty)[:3])
    every_step = FeatureMetricPnP(config).refine(init, points, ref, fmap, PINHOLE)
    assert every_step.iterations == result.iterations
    assert pose_error(result.pose, every_step.pose)[0] < 1e-9
    assert pose_error(result.pose, POSE_GT)[0] < 0.01


def test_too_few_points_and_max_iterations(scene):
    fmap, points, ref = scene
    init = _perturb(POSE_GT, 2.0, 0.5, 0)
    few = FeatureMetricPnP(RefineConfig(min_points=6)).refine(init, points[:5], ref[:5], fmap, PINHOLE)
    assert few.reason == "too_few_points" and few.pose == init and np.isinf(few.covariance[0, 0])
    capped = FeatureMetricPnP(RefineConfig(max_iterations=2)).refine(init, points, ref, fmap, PINHOLE)
    assert capped.reason == "max_iterations" and capped.iterations == 2
    with pytest.raises(CameraError, match="feature map"):
        FeatureMetricPnP().refine(init, points, ref, fmap, PINHOLE.scaled(2.0))
    with pytest.raises(ValueError, match="loss"):
        FeatureMetricPnP(RefineConfig(loss="tukey"))


def test_interpolation_exact_at_integer_pixels_and_invalid_outside():
    fmap = torch.rand(5, 7, 9) + 0.5  # strictly positive: a zero at integer pixels would be caught
    ys, xs = torch.meshgrid(torch.arange(7), torch.arange(9), indexing="ij")
    uv = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1).float()
    values, valid = interpolate_bilinear(fmap, uv)
    assert valid.all()
    assert torch.equal(values, fmap.reshape(5, -1).T)
    for method in ("central", "sobel"):
        du, dv = feature_gradients(fmap, method)
        sampled, grads, valid = FeatureSampler(fmap, method)(uv)
        assert valid.all() and torch.equal(sampled, fmap.reshape(5, -1).T)
        torch.testing.assert_close(grads, torch.stack([du, dv], -1).reshape(5, -1, 2).transpose(0, 1))
    half, _ = interpolate_bilinear(fmap, torch.tensor([[2.5, 3.0], [2.0, 3.25]]))
    torch.testing.assert_close(half[0], 0.5 * (fmap[:, 3, 2] + fmap[:, 3, 3]))
    torch.testing.assert_close(half[1], 0.75 * fmap[:, 3, 2] + 0.25 * fmap[:, 4, 2])
    _, valid = interpolate_bilinear(fmap, torch.tensor([[-0.1, 1.0], [8.0, 6.0], [8.01, 1.0], [1.0, float("nan")]]))
    assert valid.tolist() == [False, True, False, False]


@pytest.mark.parametrize("method", ["central", "sobel"])
def test_sampler_matches_interpolated_gradient_maps(method):
    torch.manual_seed(0)
    fmap = torch.randn(4, 6, 8, dtype=torch.float64)
    uv = torch.cat([torch.rand(50, 2, dtype=torch.float64) * torch.tensor([7.0, 5.0]),
                    torch.tensor([[0.0, 0.0], [7.0, 5.0], [7.0, 2.3], [0.2, 5.0], [3.0, 4.0]], dtype=torch.float64)])
    values, grads, valid = FeatureSampler(fmap, method)(uv)
    du, dv = feature_gradients(fmap, method)
    expected_values, expected_valid = interpolate_bilinear(fmap, uv)
    expected_du, _ = interpolate_bilinear(du, uv)
    expected_dv, _ = interpolate_bilinear(dv, uv)
    assert torch.equal(valid, expected_valid) and valid.all()
    torch.testing.assert_close(values, expected_values)
    torch.testing.assert_close(grads, torch.stack([expected_du, expected_dv], -1))
    only_values, only_valid = FeatureSampler(fmap, method).values(uv)  # a rejected step's cost
    assert torch.equal(only_valid, valid)
    torch.testing.assert_close(only_values, values, rtol=1e-12, atol=1e-12)


def test_gradients_of_linear_ramp():
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    fmap = torch.stack([2 * xs - 3 * ys, xs * 0 + 1])
    for method in ("central", "sobel"):
        du, dv = feature_gradients(fmap, method)
        torch.testing.assert_close(du[0, 1:-1, 1:-1], torch.full((4, 6), 2.0))
        torch.testing.assert_close(dv[0, 1:-1, 1:-1], torch.full((4, 6), -3.0))
        assert torch.all(du[1] == 0)


def test_robust_losses_match_derivatives():
    e = torch.linspace(0.0, 2.0, 41, dtype=torch.float64, requires_grad=True)
    for name in LOSSES:
        rho, w = robust_loss(name, e, 0.3)
        (drho,) = torch.autograd.grad(rho.sum(), e)
        torch.testing.assert_close(w.detach(), drho, rtol=1e-9, atol=1e-9)
        assert torch.all(rho.detach()[1:] > 0) and torch.all(w.detach() <= 1 + 1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="unchecked here: Feature-PnP on CUDA tensors agreeing with the CPU run "
                           "needs a CUDA GPU, and this machine has none")
def test_refine_on_cuda(scene):
    fmap, points, ref = scene
    init = _perturb(POSE_GT, 2.0, 0.5, 0)
    cpu = FeatureMetricPnP().refine(init, points, ref, fmap, PINHOLE)
    gpu = FeatureMetricPnP().refine(init, points.cuda(), ref.cuda(), fmap.cuda(), PINHOLE)
    dt, dr = pose_error(gpu.pose, cpu.pose)
    assert dt < 1e-3 and dr < 1e-2


@pytest.mark.parametrize("gradient", ["central", "sobel"])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("camera", [PINHOLE, DISTORTED], ids=["pinhole", "opencv"])
def test_analytic_gradient_matches_autograd(loss, gradient, camera):
    """On a feature map linear in (u, v) (so bilinear sampling, central and Sobel gradients are
    exact), 2 J^T W r of the linearisation equals autograd's derivative of the weighted robust
    cost along the left twist, for every loss, gradient method, camera model and per-point
    weights; and Gauss-Newton's H equals autograd's J^T W J."""
    from ros2_s2dhm.geometry.lie import se3_exp
    rng = np.random.default_rng(3)
    C = 8
    A, B, c = (torch.tensor(rng.normal(size=C) * k) for k in (0.02, 0.03, 1.0))
    vs, us = torch.meshgrid(torch.arange(camera.height, dtype=torch.float64),
                            torch.arange(camera.width, dtype=torch.float64), indexing="ij")
    fmap = A[:, None, None] * us + B[:, None, None] * vs + c[:, None, None]  # [C, H, W]
    uv = np.stack([rng.uniform(10, camera.width - 10, 60), rng.uniform(10, camera.height - 10, 60)], 1)
    points = torch.tensor(_intersect(camera, POSE_GT, uv))
    ref = (A * torch.tensor(uv[:, :1]) + B * torch.tensor(uv[:, 1:]) + c
           + torch.tensor(rng.normal(size=(60, C)) * 0.05))  # residuals near the loss scale
    weights = torch.tensor(rng.uniform(0.2, 2.0, 60))
    config = RefineConfig(loss=loss, loss_scale=0.1, gradient=gradient)
    problem = FeatureMetricPnP(config).problem(POSE_GT, points, ref, fmap, camera, weights)
    cost, _, n_valid, H, g, _ = problem.linearize(POSE_GT, None)
    cost = float(cost)
    assert int(n_valid) == 60

    R0, t0 = POSE_GT.to_torch()

    def uv_of(xi):
        R, t = se3_exp(xi)
        return camera.project(points @ (R @ R0).T + (R @ t0 + t), check_bounds=False)[0]

    def cost_of(xi):
        u = uv_of(xi)
        r = A * u[:, :1] + B * u[:, 1:] + c - ref
        rho, _ = robust_loss(loss, (r * r).sum(-1), 0.1)
        return (weights * rho).sum()

    xi0 = torch.zeros(6, dtype=torch.float64)
    assert float(cost_of(xi0)) == pytest.approx(cost, rel=1e-9)
    (grad_auto,) = torch.autograd.grad(cost_of(xi0.requires_grad_()), xi0)
    np.testing.assert_allclose(2 * g.numpy(), grad_auto.numpy(), rtol=1e-7, atol=1e-9)
    J_uv = torch.autograd.functional.jacobian(uv_of, torch.zeros(6, dtype=torch.float64))  # [N,2,6]
    J_f = torch.einsum("ck,nkj->ncj", torch.stack([A, B], 1), J_uv)  # [N, C, 6]
    u0 = uv_of(torch.zeros(6, dtype=torch.float64))
    e = ((A * u0[:, :1] + B * u0[:, 1:] + c - ref) ** 2).sum(-1)
    irls = weights * robust_loss(loss, e, 0.1)[1]
    np.testing.assert_allclose(H.numpy(), torch.einsum("n,nci,ncj->ij", irls, J_f, J_f).numpy(),
                               rtol=1e-7, atol=1e-9)


def test_weights_and_residual_scale():
    """Zero-weight points do not move the pose; the residual scale is the stated multiple of
    the median residual norm; bad weights are refused with their shape."""
    fmap, points, ref = _scene(PINHOLE, POSE_GT)
    init = _perturb(POSE_GT, 2.0, 0.5, 0)
    bad = ref.clone()
    bad[:100] = torch.roll(bad[:100], 1, dims=0)  # 100 wrong reference features
    w = torch.ones(len(points), dtype=torch.float64)
    w[:100] = 0.0
    weighted = FeatureMetricPnP(RefineConfig(loss="squared")).refine(init, points, bad, fmap, PINHOLE, w)
    clean = FeatureMetricPnP(RefineConfig(loss="squared")).refine(init, points[100:], ref[100:], fmap,
                                                                 PINHOLE)
    dt, dr = pose_error(weighted.pose, clean.pose)
    assert dt < 1e-6 and dr < 1e-5
    assert pose_error(weighted.pose, POSE_GT)[0] < 0.01
    problem = FeatureMetricPnP(RefineConfig(loss_scale_from_residuals=2.0)).problem(
        init, points, ref, fmap, PINHOLE)
    _, _, r, _, valid = problem._residuals(init)
    assert problem.scale == pytest.approx(2.0 * float(r.norm(dim=-1)[valid].median()))
    with pytest.raises(ValueError, match=r"weights must be \[N\]"):
        FeatureMetricPnP().refine(init, points, ref, fmap, PINHOLE, w[:-1])


def test_points_spread_over_the_image_refine_better_than_the_best_scoring_cluster():
    """The localizer keeps ``refine_max_points`` inliers spread over a grid (``select_spread``)
    rather than the best-scoring ones: with noisy reference features and the best match scores
    crowded into one corner (as on a textured facade with sky elsewhere), the spread set gives
    a smaller median pose error over 10 noise draws from the same budget of 80 points."""
    from ros2_s2dhm.point_selection import select_spread
    W, H = PINHOLE.width, PINHOLE.height
    fmap, points, ref = _scene(PINHOLE, POSE_GT, n_points=1500)
    uv = PINHOLE.project(points @ torch.tensor(POSE_GT.R).T + torch.tensor(POSE_GT.t),
                         check_bounds=False)[0].numpy()
    corner = (uv[:, 0] < 0.3 * W) & (uv[:, 1] < 0.4 * H)
    assert 80 < corner.sum() < 400
    errors = {1: [], 16: []}
    for seed in range(10):
        rng = np.random.default_rng(10 + seed)
        scores = np.where(corner, 0.9, 0.5) + rng.uniform(0, 0.05, len(uv))
        noisy = ref + torch.tensor(rng.normal(size=ref.shape) * 0.03, dtype=ref.dtype)
        init = _perturb(POSE_GT, 1.0, 0.2, seed)
        for grid in errors:
            keep = select_spread(uv, scores, W, H, 80, grid)
            if grid == 1:
                assert corner[keep].all()  # grid 1: the best scores only
            result = FeatureMetricPnP().refine(init, points[keep], noisy[keep], fmap, PINHOLE)
            errors[grid].append(pose_error(result.pose, POSE_GT))
    clustered, spread = (np.median(np.array(errors[g]), axis=0) for g in (1, 16))
    assert spread[0] < 0.8 * clustered[0] and spread[1] < clustered[1], (spread, clustered)
