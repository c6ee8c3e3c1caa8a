"""A map from a recorded drive: a rendered drive written as a rosbag2 (CompressedImage +
CameraInfo) with a TUM pose file (camera-to-world) -> ``build_map --bag --poses`` triangulates the
points with the poses fixed (pycolmap) into a COLMAP site and builds the map -> frames of the same
drive that are not in the map localize within (0.25 m, 2 deg).

Needs drive_map.py, ros/bags.py (extract_frames, write_image_folder_bag), colmap_layout.py.
"""
import cv2
import numpy as np
import pytest

from offline_tools import build_map
from ros2_s2dhm.datasets import load_dataset
from ros2_s2dhm.datasets.robotcar_raw import TimedImage
from ros2_s2dhm.datasets.synthetic.generate import default_camera, street_pose
from ros2_s2dhm.datasets.synthetic.render import render_view
from ros2_s2dhm.datasets.synthetic.scene import make_scene
from ros2_s2dhm.drive_map import read_tum_poses
from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.geometry.pose import pose_error
from ros2_s2dhm.geometry.rotation import matrix_to_quat_wxyz, wxyz_to_xyzw
from ros2_s2dhm.ros.bags import BagConfig, write_image_folder_bag
from ros2_s2dhm.runtime import build_localizer

W, H = 256, 192
START_US = 1_700_000_000_000_000
STEP = 0.5  # metres between frames


def _drive(n=41):
    """Poses (world-to-camera) of a drive along the street, weaving and turning a little."""
    return [street_pose(2.0 + STEP * i, y=-0.8 + 0.3 * np.sin(0.4 * i), yaw_deg=4 * np.cos(0.3 * i))
            for i in range(n)]


def _write_tum(path, stamps_us, poses):
    lines = ["# timestamp tx ty tz qx qy qz qw (camera-to-world)"]
    for stamp, pose in zip(stamps_us, poses):
        c2w = pose.inverse()
        q = wxyz_to_xyzw(matrix_to_quat_wxyz(c2w.R))
        lines.append(" ".join([f"{stamp / 1e6:.6f}", *(f"{v:.9f}" for v in c2w.t),
                               *(f"{v:.9f}" for v in q)]))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    root = tmp_path_factory.mktemp("drive")
    scene, camera = make_scene(5, length=30.0), default_camera(W, H)
    poses = _drive()
    held_out = [i for i in range(len(poses)) if i % 4 == 2]
    frames = root / "frames"
    frames.mkdir()
    timed, stamps, mapped = [], [], []
    images = {}
    for i, pose in enumerate(poses):
        image, _ = render_view(scene, pose, camera, rng=np.random.default_rng(i))
        images[i] = image
        if i in held_out:
            continue
        stamp = START_US + i * 100_000  # 10 Hz
        path = frames / f"{stamp}.png"
        cv2.imwrite(str(path), image[:, :, ::-1])
        timed.append(TimedImage(stamp, path))
        stamps.append(stamp)
        mapped.append(pose)
    write_image_folder_bag(root / "bag", timed, BagConfig(), camera)
    _write_tum(root / "poses_tum.txt", stamps, mapped)
    return root, camera, poses, held_out, images


def test_tum_poses_round_trip(drive):
    root, _, poses, held_out, _ = drive
    mapped = [p for i, p in enumerate(poses) if i not in held_out]
    read = read_tum_poses(root / "poses_tum.txt", "camera-to-world")
    assert len(read) == len(mapped)
    for (_, a), b in zip(read, mapped):
        dt, dr = pose_error(a, b)
        assert dt < 1e-6 and dr < 1e-4
    (root / "bad.txt").write_text("1.0 0 0 0 0 0 0 2\n")
    with pytest.raises(DatasetError, match="bad.txt:1: fields 'qx qy qz qw'"):
        read_tum_poses(root / "bad.txt")


def test_map_from_a_bag_and_tum_poses_localizes_held_out_frames(drive, tmp_path):
    root, camera, poses, held_out, images = drive
    site, map_dir = tmp_path / "site", tmp_path / "map"
    rc = build_map.main(["--bag", str(root / "bag"), "--image-topic", "/camera/image/compressed",
                         "--poses", str(root / "poses_tum.txt"), "--site", str(site),
                         "--out", str(map_dir), "--image-size", str(W), "--max-keypoints", "2048"])
    assert rc == 0
    dataset = load_dataset(site)  # a COLMAP layout
    assert len(dataset.references) == len(poses) - len(held_out)
    assert len(dataset.points3d) > 500
    for ref in dataset.references:  # the poses were kept as given
        stamp_us = int(ref.name.split("/")[-1].split(".")[0]) // 1000
        dt, dr = pose_error(ref.pose, poses[(stamp_us - START_US) // 100_000])
        assert dt < 1e-6 and dr < 1e-4
    localizer, _ = build_localizer(map_dir, "default", "cpu")
    errors = {}
    for i in held_out:
        result = localizer.localize(images[i], camera)
        errors[i] = pose_error(result.pose, poses[i]) if result.success else None
    print(f"\nheld-out frames of the drive: {errors}")
    within = [i for i, e in errors.items() if e is not None and e[0] < 0.25 and e[1] < 2.0]
    assert len(within) >= 0.8 * len(held_out), errors
    assert all(e is None or (e[0] < 5.0 and e[1] < 10.0) for e in errors.values())  # no false pose
