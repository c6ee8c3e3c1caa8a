"""make_bag: a tiny RobotCar-Seasons-layout sequence -> rosbag2 (mcap/sqlite3, v9/v8), read back with rosbags."""
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from offline_tools import make_bag
from ros2_s2dhm.errors import BagError
from ros2_s2dhm.geometry.camera import Camera
from ros2_s2dhm.geometry.rotation import euler_rpy_to_matrix, quat_wxyz_to_matrix, xyzw_to_wxyz
from ros2_s2dhm.ros.bags import (
    BagConfig,
    bag_topics,
    iter_bag_messages,
    list_timestamped_images,
    read_messages,
    write_image_folder_bag,
    write_seasons_bag,
)

W, H = 80, 60
STAMPS = [1417176458999821, 1417176459062321, 1417176459124821, 1417176459187321]
FX, FY, CX, CY = 70.0, 71.0, 40.25, 29.75  # file values, COLMAP pixel convention


@pytest.fixture
def seasons(tmp_path: Path) -> Path:
    root = tmp_path / "robotcar"
    folder = root / "images" / "night" / "rear"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stamp in STAMPS:
        image = cv2.resize(rng.integers(0, 256, (6, 8, 3)).astype(np.uint8), (W, H))
        assert cv2.imwrite(str(folder / f"{stamp}.jpg"), image)
    (root / "intrinsics").mkdir()
    (root / "intrinsics" / "rear_intrinsics.txt").write_text(f"fx {FX}\nfy {FY}\ncx {CX}\ncy {CY}\n")
    return root


def _expected_K() -> np.ndarray:
    return Camera.from_colmap("PINHOLE", W, H, [FX, FY, CX, CY]).K


@pytest.mark.parametrize("storage,version", [("mcap", 9), ("mcap", 8), ("sqlite3", 9), ("sqlite3", 8)])
def test_seasons_bag_round_trip(seasons, tmp_path, storage, version):
    out = tmp_path / "bag"
    config = BagConfig(storage=storage, version=version, frame_id="rear_optical", base_frame="base_link")
    pose = np.eye(4)
    pose[:3, :3] = euler_rpy_to_matrix(-1.57, 0.1, 3.1)
    pose[:3, 3] = [-2.0, 0.1, 0.4]
    summary = write_seasons_bag(out, seasons, "night", "rear", config, camera_pose_in_base=pose)
    assert summary.counts == {"/tf_static": 1, "/camera/image/compressed": 4, "/camera/camera_info": 4}

    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == version and meta["storage_identifier"] == storage
    tf_meta = next(t["topic_metadata"] for t in meta["topics_with_message_count"]
                   if t["topic_metadata"]["name"] == "/tf_static")
    qos = tf_meta["offered_qos_profiles"]
    qos = yaml.safe_load(qos) if isinstance(qos, str) else qos  # v8 stores a YAML string
    assert qos[0]["durability"] in ("transient_local", 1)

    with Reader(out) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == summary.counts
        assert reader.start_time == STAMPS[0] * 1000
    assert bag_topics(out)["/tf_static"].transient_local
    assert not bag_topics(out)["/camera/image/compressed"].transient_local

    folder = seasons / "images" / "night" / "rear"
    images, infos, tfs = [], [], []
    for topic, stamp, msg in read_messages(out):
        {"/camera/image/compressed": images, "/camera/camera_info": infos, "/tf_static": tfs}[topic].append(
            (stamp, msg))
    assert [s for s, _ in images] == [s * 1000 for s in STAMPS]
    for (stamp, msg), us in zip(images, STAMPS):
        assert msg.header.stamp.sec == us // 10**6 and msg.header.stamp.nanosec == (us % 10**6) * 1000
        assert msg.header.frame_id == "rear_optical" and msg.format == "jpeg"
        assert msg.data.tobytes() == (folder / f"{us}.jpg").read_bytes()
    for (stamp, info), us in zip(infos, STAMPS):
        assert stamp == us * 1000 and (info.width, info.height) == (W, H)
        assert info.distortion_model == "plumb_bob" and not np.any(info.d)
        np.testing.assert_allclose(info.k.reshape(3, 3), _expected_K())
        np.testing.assert_allclose(info.p.reshape(3, 4)[:, :3], _expected_K())
        np.testing.assert_allclose(info.r.reshape(3, 3), np.eye(3))
    ((stamp, tf_msg),) = tfs
    (tf,) = tf_msg.transforms
    assert stamp == STAMPS[0] * 1000
    assert (tf.header.frame_id, tf.child_frame_id) == ("base_link", "rear_optical")
    r = tf.transform.rotation
    np.testing.assert_allclose(quat_wxyz_to_matrix(xyzw_to_wxyz(np.array([r.x, r.y, r.z, r.w]))), pose[:3, :3],
                               atol=1e-9)
    t = tf.transform.translation
    np.testing.assert_allclose([t.x, t.y, t.z], pose[:3, 3])


def test_iter_bag_messages_offset_and_filter(seasons, tmp_path):
    out = tmp_path / "bag"
    write_seasons_bag(out, seasons, "night", "rear")
    msgs = list(iter_bag_messages(out, topics=["/camera/image/compressed"], start_offset_ns=100_000_000))
    assert [m.stamp_ns for m in msgs] == [s * 1000 for s in STAMPS[2:]]
    assert all(m.msgtype == "sensor_msgs/msg/CompressedImage" for m in msgs)


def test_folder_bag_png_without_intrinsics(tmp_path):
    folder = tmp_path / "seq"
    folder.mkdir()
    for stamp in STAMPS[:2]:
        cv2.imwrite(str(folder / f"{stamp}.png"), np.full((H, W, 3), 9, np.uint8))
    out = tmp_path / "bag"
    config = BagConfig(image_topic="/cam/image/compressed", jpeg_format="rgb8; jpeg compressed bgr8")
    summary = write_image_folder_bag(out, list_timestamped_images(folder), config)
    assert summary.counts == {"/tf_static": 1, "/cam/image/compressed": 2}
    msgs = [m for t, _, m in read_messages(out, ["/cam/image/compressed"])]
    assert [m.format for m in msgs] == ["png", "png"]
    assert msgs[0].data.tobytes() == (folder / f"{STAMPS[0]}.png").read_bytes()


def test_bad_inputs(seasons, tmp_path):
    folder = seasons / "images" / "night" / "rear"
    out = tmp_path / "bag"
    write_seasons_bag(out, seasons, "night", "rear")
    with pytest.raises(BagError, match="exists already"):
        write_seasons_bag(out, seasons, "night", "rear")
    with pytest.raises(BagError, match="storage"):
        BagConfig(storage="rosbag1")
    with pytest.raises(BagError, match="version"):
        BagConfig(version=5)
    cv2.imwrite(str(folder / f"{STAMPS[-1] + 1}.jpg"), np.zeros((H + 2, W, 3), np.uint8))
    with pytest.raises(BagError, match="one camera per bag"):
        write_seasons_bag(tmp_path / "bag2", seasons, "night", "rear")
    assert not (tmp_path / "bag2").exists()  # aborted and removed
    (folder / "not_a_stamp.jpg").write_bytes(b"")
    with pytest.raises(BagError, match="integer timestamps"):
        list_timestamped_images(folder)
    with pytest.raises(BagError, match="metadata.yaml"):
        list(read_messages(tmp_path))


def test_make_bag_cli(seasons, tmp_path, capsys):
    out = tmp_path / "cli_bag"
    rc = make_bag.main(["seasons", str(out), "--root", str(seasons), "--condition", "night", "--camera", "rear",
                        "--storage", "sqlite3", "--bag-version", "8", "--image-topic", "/rear/image/compressed",
                        "--camera-info-topic", "/rear/camera_info", "--frame-id", "rear"])
    assert rc == 0
    assert "/rear/image/compressed: 4 messages" in capsys.readouterr().out
    topics = bag_topics(out)
    assert topics["/rear/image/compressed"].count == 4 and topics["/rear/camera_info"].count == 4
    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 8 and meta["storage_identifier"] == "sqlite3"
    # an error is reported, not raised
    assert make_bag.main(["seasons", str(tmp_path / "x"), "--root", str(seasons), "--condition", "dusk",
                          "--camera", "rear"]) == 1


def test_make_bag_cli_folder_with_pose(seasons, tmp_path):
    pose = np.eye(4)
    pose[:3, 3] = [0.5, -0.25, 1.5]
    pose_file = tmp_path / "pose.txt"
    np.savetxt(pose_file, pose)
    out = tmp_path / "folder_bag"
    rc = make_bag.main(["folder", str(out), "--images", str(seasons / "images" / "night" / "rear"),
                        "--intrinsics", str(seasons / "intrinsics" / "rear_intrinsics.txt"),
                        "--camera-pose", str(pose_file), "--base-frame", "vehicle"])
    assert rc == 0
    (tf_msg,) = [m for _, _, m in read_messages(out, ["/tf_static"])]
    t = tf_msg.transforms[0].transform.translation
    assert tf_msg.transforms[0].header.frame_id == "vehicle" and [t.x, t.y, t.z] == [0.5, -0.25, 1.5]
    info = next(m for _, _, m in read_messages(out, ["/camera/camera_info"]))
    np.testing.assert_allclose(info.k.reshape(3, 3), _expected_K())


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_camera_info_precedes_its_image(seasons, tmp_path, storage):
    out = tmp_path / "bag"
    write_seasons_bag(out, seasons, "night", "rear", BagConfig(storage=storage))
    order = [m.topic for m in iter_bag_messages(out, ["/camera/image/compressed", "/camera/camera_info"])]
    assert order == ["/camera/camera_info", "/camera/image/compressed"] * len(STAMPS)
