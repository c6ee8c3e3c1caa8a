"""Dataset readers and writers: NVM, intrinsics, RobotCar Seasons layout, CMU slices, hloc query lists."""
from pathlib import Path

import cv2
import numpy as np
import pycolmap
import pytest

from ros2_s2dhm.datasets import load_dataset
from ros2_s2dhm.datasets.base import image_size, read_image
from ros2_s2dhm.datasets.cmu import CMU_QUERY_CAMERAS, load_cmu_slice
from ros2_s2dhm.datasets.query_list import read_query_list, write_query_list
from ros2_s2dhm.datasets.robotcar import (NVMCamera, NVMModel, load_robotcar_seasons, read_intrinsics, read_nvm,
                                          write_intrinsics, write_nvm)
from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.geometry.camera import Camera
from ros2_s2dhm.geometry.pose import Pose
from ros2_s2dhm.geometry.rotation import euler_rpy_to_matrix

W, H = 40, 30  # non-square on purpose


def _pose(yaw: float, center) -> Pose:
    return Pose.from_center(euler_rpy_to_matrix(0.1, yaw, 0.05), center)


def _write_jpg(path: Path, width=W, height=H, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((height, width, 3), value, np.uint8))


def _model() -> NVMModel:
    cameras = [NVMCamera(f"./overcast-reference/rear/{i}.png", 30.0, _pose(0.1 * i, [i, 0.5, -1.0]))
               for i in range(3)]
    points = np.array([[0.0, 0.0, 5.0], [1.0, -1.0, 6.0], [2.5, 0.3, 7.0], [-1.0, 1.0, 4.0]])
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 8, 7]], np.uint8)
    # point 0 seen by all three images, point 1 by two, point 2 by one, point 3 by none
    obs_point = np.array([0, 0, 0, 1, 1, 2])
    obs_image = np.array([0, 1, 2, 0, 2, 1])
    obs_uv = np.array([[3.25, 4.5], [10.0, 20.0], [39.0, 29.0], [0.0, 0.0], [19.5, 14.5], [7.125, 8.875]])
    return NVMModel.from_pixels(cameras, [(W, H)] * 3, points, colors, obs_point, obs_image, obs_uv)


def test_nvm_round_trip(tmp_path):
    model = _model()
    path = write_nvm(tmp_path / "m.nvm", model)
    back = read_nvm(path)
    assert [c.name for c in back.cameras] == [c.name for c in model.cameras]
    for a, b in zip(back.cameras, model.cameras):
        assert a.focal == b.focal
        np.testing.assert_allclose(a.pose.R, b.pose.R, atol=1e-12)
        np.testing.assert_allclose(a.pose.t, b.pose.t, atol=1e-12)
    np.testing.assert_array_equal(back.points, model.points)
    np.testing.assert_array_equal(back.colors, model.colors)
    got = sorted(zip(back.obs_point, back.obs_image, back.obs_feature, map(tuple, back.obs_xy)))
    want = sorted(zip(model.obs_point, model.obs_image, model.obs_feature, map(tuple, model.obs_xy)))
    assert got == want
    assert np.sum(back.obs_point == 0) == 3
    # centre-relative coordinates: u_opencv = x + w/2 - 0.5
    np.testing.assert_allclose(model.obs_xy[0], [3.25 - (W / 2 - 0.5), 4.5 - (H / 2 - 0.5)])
    # the file stores the camera centre and a world-to-camera quaternion
    line = path.read_text().splitlines()[3].split()
    np.testing.assert_allclose([float(v) for v in line[6:9]], model.cameras[0].pose.center)


def test_nvm_errors_name_line_and_field(tmp_path):
    path = write_nvm(tmp_path / "m.nvm", _model())
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(" 30.0 ", " abc ")
    bad = tmp_path / "bad.nvm"
    bad.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=r"bad\.nvm:4: camera"):
        read_nvm(bad)
    lines = path.read_text().splitlines()
    point_line = next(i for i, l in enumerate(lines) if l.startswith("0.0 0.0 5.0"))
    lines[point_line] = lines[point_line].rsplit(" ", 1)[0]  # drop one field
    bad.write_text("\n".join(lines))
    with pytest.raises(DatasetError, match=rf"bad\.nvm:{point_line + 1}: point 0: 3 observations"):
        read_nvm(bad)
    bad.write_text("NVM_V2\n")
    with pytest.raises(DatasetError, match="NVM_V3"):
        read_nvm(bad)


def test_intrinsics_reader_and_writer(tmp_path):
    path = tmp_path / "rear_intrinsics.txt"
    path.write_text("fx 400.000000\nfy 401.5\ncx 508.222931\ncy 498.187378\n")
    assert read_intrinsics(path) == {"fx": 400.0, "fy": 401.5, "cx": 508.222931, "cy": 498.187378}
    camera = Camera.from_pinhole(50.0, 51.0, 19.25, 14.0, W, H)
    back = read_intrinsics(write_intrinsics(tmp_path / "w.txt", camera))
    assert back == {"fx": 50.0, "fy": 51.0, "cx": 19.75, "cy": 14.5}  # COLMAP convention in the file
    path.write_text("fx 400\nfy 400\ncx nope\ncy 1\n")
    with pytest.raises(DatasetError, match=r"rear_intrinsics.txt:3: field 'cx'"):
        read_intrinsics(path)
    path.write_text("fx 400\nfy 400\ncx 1\n")
    with pytest.raises(DatasetError, match=r"missing field\(s\) \['cy'\]"):
        read_intrinsics(path)


def _robotcar_layout(root: Path) -> NVMModel:
    model = _model()
    for i in range(3):
        _write_jpg(root / "images" / "overcast-reference" / "rear" / f"{i}.jpg")
    for cond, ts in (("night", 111), ("night", 112), ("snow", 222)):
        _write_jpg(root / "images" / cond / "rear" / f"{ts}.jpg")
    write_nvm(root / "3D-models" / "all-merged" / "all.nvm", model)
    write_intrinsics(root / "intrinsics" / "rear_intrinsics.txt", Camera.from_pinhole(30.0, 30.0, 19.0, 14.0, W, H))
    return model


def test_load_robotcar_seasons(tmp_path):
    model = _robotcar_layout(tmp_path)
    dataset = load_robotcar_seasons(tmp_path)
    assert [r.name for r in dataset.references] == [f"overcast-reference/rear/{i}.jpg" for i in range(3)]
    ref = dataset.references[0]
    assert ref.path.is_file() and (ref.camera.width, ref.camera.height) == (W, H)
    np.testing.assert_allclose(ref.camera.K[:2, 2], [19.0, 14.0])
    np.testing.assert_allclose(ref.pose.R, model.cameras[0].pose.R, atol=1e-12)
    order = np.argsort(ref.point_ids)
    np.testing.assert_array_equal(ref.point_ids[order], [0, 1])
    np.testing.assert_allclose(ref.keypoints[order], [[3.25, 4.5], [0.0, 0.0]])
    assert len(dataset.references[1].keypoints) == 2 and len(dataset.references[2].keypoints) == 2
    assert dataset.points3d.shape == (4, 3)
    assert [(q.name, q.condition) for q in dataset.queries] == [
        ("rear/111.jpg", "night"), ("rear/112.jpg", "night"), ("rear/222.jpg", "snow")]
    only = load_robotcar_seasons(tmp_path, conditions=["snow"])
    assert [q.name for q in only.queries] == ["rear/222.jpg"]
    assert len(load_dataset(tmp_path).queries) == 3
    with pytest.raises(DatasetError, match="fog"):
        load_robotcar_seasons(tmp_path, conditions=["fog"])
    (tmp_path / "images" / "overcast-reference" / "rear" / "1.jpg").unlink()
    with pytest.raises(DatasetError, match=r"all\.nvm: image 'overcast-reference/rear/1\.png'"):
        load_robotcar_seasons(tmp_path)


def test_read_image_and_size(tmp_path):
    path = tmp_path / "a.jpg"
    image = np.zeros((H, W, 3), np.uint8)
    image[..., 0] = 250  # red in RGB
    cv2.imwrite(str(path), image[..., ::-1].copy())
    rgb = read_image(path)
    assert rgb.shape == (H, W, 3) and rgb[..., 0].mean() > 200 and rgb[..., 2].mean() < 50
    assert image_size(path) == (W, H)
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="b.jpg"):
        read_image(tmp_path / "b.jpg")
    with pytest.raises(DatasetError, match="b.jpg"):
        image_size(tmp_path / "b.jpg")


def _colmap_slice(root: Path):
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera(model="PINHOLE", width=W, height=H, params=[30.0, 31.0, 20.0, 15.0], camera_id=1)
    rec.add_camera_with_trivial_rig(cam)
    points = np.array([[0.0, 0.0, 5.0], [1.0, -1.0, 6.0], [0.5, 0.5, 7.0]])
    poses = [_pose(0.0, [0, 0, 0]), _pose(0.1, [0.5, 0, 0])]
    names = ["img_00001_c0_1000us.jpg", "img_00002_c1_2000us.jpg"]
    for image_id, (name, pose) in enumerate(zip(names, poses), start=1):
        uv = Camera.from_pycolmap(cam).project_np(pose.transform(points))[0] + 0.5  # COLMAP pixels
        image = pycolmap.Image(name=name, keypoints=uv, camera_id=1, image_id=image_id)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(pycolmap.Rotation3d(pose.R), pose.t))
        _write_jpg(root / "database" / name)
    for k, xyz in enumerate(points):  # keypoint k of each image observes point k
        track = pycolmap.Track()
        track.add_element(1, k)
        track.add_element(2, k)
        rec.add_point3D(xyz, track)
    (root / "sparse").mkdir(parents=True)
    rec.write(str(root / "sparse"))
    _write_jpg(root / "query" / "img_09000_c0_5000us.jpg", 1024, 768)
    _write_jpg(root / "query" / "img_09001_c1_6000us.jpg", 512, 384)
    return points, poses, names


def test_load_cmu_slice(tmp_path):
    root = tmp_path / "slice7"
    points, poses, names = _colmap_slice(root)
    dataset = load_dataset(root)
    assert dataset.name == "slice7"
    assert [r.name for r in dataset.references] == names
    for ref, pose in zip(dataset.references, poses):
        np.testing.assert_allclose(ref.pose.R, pose.R, atol=1e-9)
        np.testing.assert_allclose(ref.pose.t, pose.t, atol=1e-9)
        np.testing.assert_allclose(ref.camera.K[:2, 2], [19.5, 14.5])  # COLMAP -> OpenCV
        assert len(ref.point_ids) >= 3
        uv, _ = ref.camera.project_np(ref.pose.transform(dataset.points3d[ref.point_ids]))
        np.testing.assert_allclose(uv, ref.keypoints, atol=1e-6)
    q0, q1 = dataset.queries
    assert (q0.name, q1.name) == ("img_09000_c0_5000us.jpg", "img_09001_c1_6000us.jpg")
    c0 = CMU_QUERY_CAMERAS["c0"][3]
    assert q0.camera.model == "OPENCV" and q0.camera.size == (1024, 768)
    np.testing.assert_allclose(q0.camera.params, [c0[0], c0[1], c0[2] - 0.5, c0[3] - 0.5, *c0[4:]])
    assert q1.camera.size == (512, 384)  # scaled to the image read from disk
    np.testing.assert_allclose(q1.camera.K[0, 0], CMU_QUERY_CAMERAS["c1"][3][0] / 2)
    with pytest.raises(DatasetError, match="does not exist"):
        load_cmu_slice(tmp_path / "missing_slice")
    (tmp_path / "bad_slice" / "sparse").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no COLMAP model"):
        load_cmu_slice(tmp_path / "bad_slice")


def test_query_list_round_trip(tmp_path):
    cams = [("night/rear/1.jpg", Camera.from_pinhole(400.0, 400.0, 507.722931, 497.687378, 1024, 1024)),
            ("img_c0_1.jpg", Camera.from_colmap("OPENCV", 1024, 768, CMU_QUERY_CAMERAS["c0"][3])),
            ("x.jpg", Camera("SIMPLE_RADIAL", 64, 48, [50.0, 31.5, 23.5, -0.01]))]
    path = write_query_list(tmp_path / "q.txt", cams)
    assert path.read_text().splitlines()[0] == "night/rear/1.jpg PINHOLE 1024 1024 400.0 400.0 508.222931 498.187378"
    back = read_query_list(path)
    assert [n for n, _ in back] == [n for n, _ in cams]
    for (_, a), (_, b) in zip(back, cams):
        assert a.model == b.model and a.size == b.size
        np.testing.assert_allclose(a.params, b.params, rtol=0, atol=1e-12)
    path.write_text("a.jpg PINHOLE 10 10 1 1 5\n")
    with pytest.raises(DatasetError, match=r"q.txt:1: .*expects 4 params"):
        read_query_list(path)
    path.write_text("\na.jpg FISHEYE9 10 10 1 1 5 5\n")
    with pytest.raises(DatasetError, match=r"q.txt:2: field 'MODEL'"):
        read_query_list(path)
    path.write_text("a.jpg PINHOLE ten 10 1 1 5 5\n")
    with pytest.raises(DatasetError, match=r"q.txt:1: fields 'WIDTH HEIGHT'"):
        read_query_list(path)
