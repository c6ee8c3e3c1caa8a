"""Synthetic seasons: rendering geometry, layout, model consistency, ground truth, correspondences."""
import glob
import hashlib
from pathlib import Path

import numpy as np
import pytest

from offline_tools import make_synthetic
from ros2_s2dhm.datasets.base import read_image
from ros2_s2dhm.datasets.correspondences import read_correspondences_mat
from ros2_s2dhm.datasets.robotcar import load_robotcar_seasons, read_nvm
from ros2_s2dhm.datasets.synthetic import (CONDITIONS, SIZES, default_camera, generate_synthetic, make_scene,
                                           render_view, street_pose)
from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.geometry.pose import Pose


@pytest.fixture(scope="module")
def tiny(tiny_synthetic):
    """The session's tiny set (conftest): generate_synthetic(..., seed=0, size="tiny")."""
    return tiny_synthetic


@pytest.fixture(scope="module")
def scene():
    return make_scene(3, length=12.0)


def _digest(root: Path) -> dict:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in (".jpg", ".nvm", ".txt"))
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_layout(tiny):
    root = tiny.root
    size = SIZES["tiny"]
    assert (root / "intrinsics" / "rear_intrinsics.txt").is_file()
    assert (root / "3D-models" / "all-merged" / "all.nvm").is_file()
    refs = sorted((root / "images" / "overcast-reference" / "rear").glob("*.jpg"))
    assert len(refs) == len(tiny.references) >= 5
    for condition in size.conditions:
        assert len(list((root / "images" / condition / "rear").glob("*.jpg"))) == size.queries_per_condition
        assert len(list((root / "correspondences" / condition).glob("*.mat"))) == size.queries_per_condition
        assert (root / "queries" / f"{condition}_queries_with_intrinsics.txt").is_file()
    assert read_image(refs[0]).shape == (size.height, size.width, 3)
    names = [c.name for c in read_nvm(root / "3D-models" / "all-merged" / "all.nvm").cameras]
    assert all(n.startswith("./overcast-reference/rear/") and n.endswith(".png") for n in names)


def test_deterministic_per_seed(tiny, tmp_path):
    again = generate_synthetic(tmp_path / "again", seed=0, size="tiny")
    assert _digest(again.root) == _digest(tiny.root)
    other = generate_synthetic(tmp_path / "other", seed=1, size="tiny", conditions=["night"])
    a = read_image(sorted((tiny.root / "images" / "overcast-reference" / "rear").glob("*.jpg"))[0])
    b = read_image(sorted((other.root / "images" / "overcast-reference" / "rear").glob("*.jpg"))[0])
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10  # another street


def test_model_reprojects_and_lies_on_surfaces(tiny):
    dataset = load_robotcar_seasons(tiny.root)
    assert len(dataset.references) == len(tiny.references)
    counts = np.bincount(np.concatenate([r.point_ids for r in dataset.references]), minlength=len(dataset.points3d))
    assert counts.min() >= 2  # every point seen by >= 2 references
    for ref, truth in zip(dataset.references, tiny.references):
        np.testing.assert_allclose(ref.pose.matrix(), truth.pose.matrix(), atol=1e-9)
        assert len(ref.keypoints) >= 200
        p_cam = ref.pose.transform(dataset.points3d[ref.point_ids])
        uv, valid = ref.camera.project_np(p_cam)
        assert valid.all()
        assert np.abs(uv - ref.keypoints).max() < 0.5
        # the points lie on the rendered surface (depth at the nearest pixel)
        _, depth = render_view(tiny.scene, ref.pose, ref.camera, "overcast-reference")
        ui, vi = np.rint(ref.keypoints).astype(int).T
        assert np.median(np.abs(depth[vi, ui] - p_cam[:, 2]) / p_cam[:, 2]) < 0.005


def test_ground_truth_and_queries(tiny):
    dataset = load_robotcar_seasons(tiny.root)
    lines = (tiny.root / "ground_truth.txt").read_text().split("\n")
    gt = {}
    for line in filter(None, lines):
        name, *values = line.split()
        assert len(values) == 7
        values = np.array(values, float)
        gt[name] = Pose.from_quaternion(values[:4], values[4:])
    assert sorted(gt) == sorted(q.name for q in dataset.queries)
    assert len(gt) == len(tiny.queries)
    for view in tiny.queries:
        name = "rear/" + view.name.split("/")[-1]
        np.testing.assert_allclose(gt[name].matrix(), view.pose.matrix(), atol=1e-8)
    camera = dataset.queries[0].camera
    assert camera == tiny.camera and camera.size == (SIZES["tiny"].width, SIZES["tiny"].height)


def test_night_is_darker_than_reference(tiny):
    root = tiny.root / "images"
    ref = np.mean([read_image(p).mean() for p in (root / "overcast-reference" / "rear").glob("*.jpg")])
    night = np.mean([read_image(p).mean() for p in (root / "night" / "rear").glob("*.jpg")])
    snow = np.mean([read_image(p).mean() for p in (root / "snow" / "rear").glob("*.jpg")])
    assert night < 0.6 * ref
    assert snow > ref  # white cover


def test_correspondences_are_exact(tiny):
    files = sorted(glob.glob(str(tiny.root / "correspondences" / "*" / "*.mat")))
    assert len(files) == len(tiny.queries) * SIZES["tiny"].correspondence_references
    views = {v.name: v for v in tiny.references + tiny.queries}
    camera = tiny.camera
    for path in files[:3]:
        corr = read_correspondences_mat(path)
        assert len(corr) >= 50
        ref, query = views[corr.image_i], views[corr.image_j]
        assert (tiny.root / "images" / corr.image_i).is_file() and (tiny.root / "images" / corr.image_j).is_file()
        assert query.condition != "overcast-reference" and ref.condition == "overcast-reference"
        _, depth = render_view(tiny.scene, query.pose, camera, "overcast-reference")
        uv = np.rint(corr.pt_j).astype(int)
        np.testing.assert_allclose(uv, corr.pt_j)  # query grid pixels
        rays = camera.unproject_np(corr.pt_j)
        world = query.pose.inverse().transform(rays * depth[uv[:, 1], uv[:, 0], None])
        projected, valid = camera.project_np(ref.pose.transform(world))
        assert valid.all()
        np.testing.assert_allclose(projected, corr.pt_i, atol=1e-6)


def test_render_view_geometry(scene):
    camera = default_camera(96, 64)
    pose_a = street_pose(4.0)
    pose_b = street_pose(5.0, y=-0.3, yaw_deg=4.0)
    image_a, depth_a = render_view(scene, pose_a, camera, "overcast-reference", np.random.default_rng(0))
    image_b, depth_b = render_view(scene, pose_b, camera, "overcast-reference", np.random.default_rng(0))
    assert image_a.shape == (64, 96, 3) and image_a.dtype == np.uint8 and depth_a.shape == (64, 96)
    assert np.isfinite(depth_a).mean() > 0.6 and image_a.std() > 10
    again, _ = render_view(scene, pose_a, camera, "overcast-reference", np.random.default_rng(0))
    np.testing.assert_array_equal(again, image_a)
    # depth is camera z: a point seen in A reprojects in B onto a pixel of the same surface depth
    v, u = np.mgrid[8:56:6, 8:88:6]
    uv = np.stack([u.ravel(), v.ravel()], -1).astype(float)
    z = depth_a[v.ravel(), u.ravel()]
    keep = np.isfinite(z)
    world = pose_a.inverse().transform(camera.unproject_np(uv[keep]) * z[keep, None])
    p_b = pose_b.transform(world)
    uv_b, valid = camera.project_np(p_b)
    ui, vi = np.rint(uv_b[valid]).astype(int).T
    rel = np.abs(depth_b[vi, ui] - p_b[valid, 2]) / p_b[valid, 2]
    assert valid.sum() > 50 and np.median(rel) < 0.01
    # the street is in front: looking backward along -x the camera x axis points to +y
    np.testing.assert_allclose(pose_a.R[2], [-1, 0, 0], atol=1e-12)


def test_every_condition_renders(scene):
    camera = default_camera(48, 32)
    pose = street_pose(6.0)
    means = {}
    for name in CONDITIONS:
        image, _ = render_view(scene, pose, camera, name, np.random.default_rng(1))
        assert image.shape == (32, 48, 3)
        means[name] = image.mean()
    assert means["night"] < 0.6 * means["overcast-reference"]
    assert means["dusk"] < 0.8 * means["overcast-reference"] < means["snow"]
    with pytest.raises(DatasetError, match="unknown synthetic condition"):
        render_view(scene, pose, camera, "fog")


def test_make_synthetic_tool(tmp_path, capsys):
    out = tmp_path / "set"
    rc = make_synthetic.main(["--out", str(out), "--size", "tiny", "--seed", "5", "--conditions", "night",
                              "--width", "64", "--height", "48", "--queries-per-condition", "1", "--quiet"])
    assert rc == 0
    assert "wrote" in capsys.readouterr().out
    images = list((out / "images" / "night" / "rear").glob("*.jpg"))
    assert len(images) == 1 and read_image(images[0]).shape == (48, 64, 3)
    assert make_synthetic.main(["--out", str(tmp_path / "x"), "--size", "tiny", "--conditions", "fog",
                                "--quiet"]) == 2
    assert "fog" in capsys.readouterr().err


def test_scene_faces_the_street_and_culling_is_exact(scene):
    from ros2_s2dhm.datasets.synthetic.raycast import _frustum_candidates, intersect, pixel_rays

    for quad in scene.quads:
        if quad.kind == "ground":
            assert quad.normal[2] > 0.999
        elif quad.kind == "facade":
            center = quad.origin + 0.5 * (quad.edge_u + quad.edge_v)
            assert quad.normal @ (np.array([6.0, 0.0, center[2]]) - center) > 0  # towards the street
    camera = default_camera(64, 48)
    for pose in (street_pose(2.0), street_pose(9.0, y=0.2, yaw_deg=5, pitch_deg=3), street_pose(4.0, backward=False)):
        rays = pixel_rays(camera).reshape(-1, 3) @ pose.R
        brute = intersect(scene.quads, pose.center, rays)
        culled = intersect(scene.quads, pose.center, rays, candidates=_frustum_candidates(pose, camera))
        np.testing.assert_array_equal(brute[1], culled[1])
        np.testing.assert_array_equal(brute[0], culled[0])


def test_condition_subset_gives_the_same_queries(tiny, tmp_path):
    subset = generate_synthetic(tmp_path / "subset", seed=0, size="tiny", conditions=["night"])
    full = {v.name: v for v in tiny.queries}
    assert [v.name for v in subset.queries] == [v.name for v in tiny.queries if v.condition == "night"]
    for view in subset.queries:
        np.testing.assert_array_equal(view.pose.matrix(), full[view.name].pose.matrix())
        a = read_image(subset.root / "images" / view.name)
        b = read_image(tiny.root / "images" / view.name)
        np.testing.assert_array_equal(a, b)


def test_other_days_change_parked_cars_only(tmp_path):
    from dataclasses import replace

    from ros2_s2dhm.datasets.synthetic import scene_of_condition

    base = make_scene(2, length=30.0)
    assert scene_of_condition(base, "overcast-reference", 1.0) is base
    same = base.with_changes(0, 1.0)  # variant 0 is the reference day
    assert len(same.quads) == len(base.quads)
    night = scene_of_condition(base, "night", 1.0)
    assert all(a is b for a, b in zip(night.quads[:base.num_static], base.quads[:base.num_static]))
    changed = night.quads[base.num_static:]
    assert all(q.kind == "car" for q in changed)
    assert len(changed) < len(base.quads) - base.num_static  # some cars are gone
    origins = {tuple(np.round(q.origin, 6)) for q in base.quads[base.num_static:]}
    assert any(tuple(np.round(q.origin, 6)) not in origins for q in changed)  # some moved
    again = scene_of_condition(base, "night", 1.0)
    assert [tuple(q.origin) for q in again.quads] == [tuple(q.origin) for q in night.quads]
    # a generated set with changes keeps exact correspondences (the depth test drops changed pixels)
    size = replace(SIZES["tiny"], conditions=("snow",), queries_per_condition=1, scene_changes=1.0)
    data = generate_synthetic(tmp_path / "changes", seed=2, size=size)
    view = data.queries[0]
    corr = read_correspondences_mat(next((data.root / "correspondences" / "snow").glob("*.mat")))
    ref = next(r for r in data.references if r.name == corr.image_i)
    day = scene_of_condition(data.scene, "snow", 1.0)
    _, depth = render_view(day, view.pose, data.camera, "overcast-reference")
    _, depth_ref = render_view(data.scene, ref.pose, data.camera, "overcast-reference")
    uv = np.rint(corr.pt_j).astype(int)
    world = view.pose.inverse().transform(data.camera.unproject_np(corr.pt_j) * depth[uv[:, 1], uv[:, 0], None])
    p_ref = ref.pose.transform(world)
    np.testing.assert_allclose(data.camera.project_np(p_ref)[0], corr.pt_i, atol=1e-6)
    ui, vi = np.rint(corr.pt_i).astype(int).T
    assert np.all(np.abs(depth_ref[vi, ui] - p_ref[:, 2]) < 0.03 + 0.01 * p_ref[:, 2])
