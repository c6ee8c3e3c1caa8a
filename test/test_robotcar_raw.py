"""Raw Oxford RobotCar reader and its bag conversion, on tiny files written in the SDK formats."""
from pathlib import Path

import cv2
import numpy as np
import pytest

from ros2_s2dhm.datasets import robotcar_raw as rr
from ros2_s2dhm.errors import BagError, DatasetError
from ros2_s2dhm.geometry.rotation import quat_wxyz_to_matrix, xyzw_to_wxyz
from ros2_s2dhm.ros.bags import BagConfig, read_messages, write_robotcar_raw_bag

H, W = 48, 64
STAMPS = [1418381798086398, 1418381798148908, 1418381798211418]
MONO_G = rr.DEFAULT_G_CAMERA_IMAGE
XYZRPY = (-2.0582, 0.0894, 0.3675, -0.0119, -0.2498, 3.1283)


def smooth_rgb(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (H // 8, W // 8, 3)).astype(np.uint8)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)


def sdk_euler_to_so3(roll, pitch, yaw):
    """The SDK's euler_to_so3 written out (Rz @ Ry @ Rx), the reference for read_extrinsics."""
    cr, sr, cp, sp, cy, sy = np.cos(roll), np.sin(roll), np.cos(pitch), np.sin(pitch), np.cos(yaw), np.sin(yaw)
    Rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    Ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    Rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


@pytest.fixture
def sequence(tmp_path: Path):
    """A mono_rear sequence of 3 Bayer PNGs (one listed but missing), model with LUT, extrinsics."""
    seq = tmp_path / "2014-12-12-10-45-15"
    (seq / "mono_rear").mkdir(parents=True)
    originals = {}
    for i, stamp in enumerate(STAMPS):
        rgb = smooth_rgb(i)
        originals[stamp] = rgb
        assert cv2.imwrite(str(seq / "mono_rear" / f"{stamp}.png"), rr.mosaic(rgb, "rggb"))
    missing = STAMPS[-1] + 62500
    (seq / "mono_rear.timestamps").write_text("".join(f"{s} {1}\n" for s in STAMPS + [missing]))
    # identity LUT: u, v of every undistorted pixel = itself (planar: all u then all v)
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    lut = np.stack([u.ravel(), v.ravel()], axis=1)
    rr.write_camera_model(tmp_path / "models", "mono_rear", 40.0, 41.0, 31.0, 23.0, MONO_G, lut)
    (tmp_path / "extrinsics").mkdir()
    (tmp_path / "extrinsics" / "mono_rear.txt").write_text(" ".join(map(str, XYZRPY)) + "\n")
    return seq, tmp_path / "models", tmp_path / "extrinsics", originals


def test_bayer_round_trip_every_pattern():
    rgb = smooth_rgb(7)
    for pattern in ("rggb", "gbrg", "grbg", "bggr"):
        out = rr.demosaic(rr.mosaic(rgb, pattern), pattern)
        assert out.shape == rgb.shape and out.dtype == np.uint8
        err = np.abs(out[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2]).mean()
        assert err < 4.0, (pattern, err)
    # the wrong pattern gives visibly wrong colours
    wrong = rr.demosaic(rr.mosaic(rgb, "rggb"), "gbrg")
    assert np.abs(wrong[2:-2, 2:-2].astype(int) - rgb[2:-2, 2:-2]).mean() > 8.0
    assert rr.bayer_pattern("mono_left") == "rggb" and rr.bayer_pattern("stereo/centre") == "gbrg"
    with pytest.raises(DatasetError):
        rr.demosaic(rgb, "rggb")


def test_timestamps_model_and_extrinsics_files(sequence):
    seq, models, extrinsics, _ = sequence
    stamps, chunks = rr.read_timestamps(seq / "mono_rear.timestamps")
    assert stamps.dtype == np.int64 and stamps[:3].tolist() == STAMPS and set(chunks.tolist()) == {1}

    model = rr.read_camera_model(models, "mono_rear")
    assert (model.fx, model.fy, model.cx, model.cy) == (40.0, 41.0, 31.0, 23.0)
    np.testing.assert_allclose(model.G_camera_image, MONO_G)
    assert model.lut.shape == (H * W, 2)
    assert rr.model_name("stereo/centre") == "stereo_narrow_left"

    T = rr.read_extrinsics(extrinsics / "mono_rear.txt")
    np.testing.assert_allclose(T[:3, :3], sdk_euler_to_so3(*XYZRPY[3:]), atol=1e-12)
    np.testing.assert_allclose(T[:3, 3], XYZRPY[:3])

    bad = extrinsics / "bad.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(DatasetError, match="bad.txt"):
        rr.read_extrinsics(bad)
    with pytest.raises(DatasetError, match="unknown RobotCar camera"):
        rr.model_name("front")


def test_lut_undistortion_samples_the_distorted_pixel(sequence):
    _, models, _, _ = sequence
    model = rr.read_camera_model(models, "mono_rear")
    image = smooth_rgb(3)
    np.testing.assert_array_equal(model.undistort(image), image)  # identity LUT
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    shifted = rr.RobotCarCameraModel("x", 1, 1, 0, 0, MONO_G, np.stack([u.ravel() + 2, v.ravel() + 1], axis=1))
    out = shifted.undistort(image)
    np.testing.assert_array_equal(out[:-1, :-2], image[1:, 2:])
    with pytest.raises(DatasetError, match="does not match"):
        model.undistort(image[:-2])


def test_sequence_loads_demosaiced_frames(sequence):
    seq, models, extrinsics, originals = sequence
    raw = rr.RawSequence(seq, "mono_rear", models, extrinsics)
    assert len(raw) == 3  # the missing image is skipped
    for i, frame in enumerate(raw.frames):
        image = raw.load(i)
        assert image.shape == (H, W, 3)
        err = np.abs(image[2:-2, 2:-2].astype(int) - originals[frame.timestamp_us][2:-2, 2:-2]).mean()
        assert err < 4.0
    # optical frame in the vehicle frame: camera pose = inverse of the SDK's G_camera_vehicle
    G_camera_vehicle = rr.read_extrinsics(extrinsics / "mono_rear.txt")
    T = raw.optical_pose_in_vehicle()
    np.testing.assert_allclose(T, np.linalg.inv(G_camera_vehicle) @ MONO_G, atol=1e-12)
    # the rear camera looks backwards: optical z along -x of the vehicle
    assert T[:3, 2] @ np.array([-1.0, 0, 0]) > 0.9
    with pytest.raises(DatasetError, match="image folder not found"):
        rr.RawSequence(seq, "mono_left", models, extrinsics)


@pytest.mark.parametrize("encoding", ["rgb8", "jpeg"])
def test_raw_sequence_to_bag(sequence, tmp_path, encoding):
    seq, models, extrinsics, originals = sequence
    raw = rr.RawSequence(seq, "mono_rear", models, extrinsics)
    topic = "/rear/image" if encoding == "rgb8" else "/rear/image/compressed"
    config = BagConfig(storage="sqlite3", version=9, image_topic=topic, camera_info_topic="/rear/camera_info",
                       frame_id="mono_rear_optical", base_frame="base_link")
    out = tmp_path / f"bag_{encoding}"
    summary = write_robotcar_raw_bag(out, raw, config, encoding=encoding)
    assert summary.counts == {"/tf_static": 1, topic: 3, "/rear/camera_info": 3}

    images, infos, tfs = [], [], []
    for t, stamp, msg in read_messages(out):
        {topic: images, "/rear/camera_info": infos, "/tf_static": tfs}[t].append((stamp, msg))
    assert [s for s, _ in images] == [s * 1000 for s in STAMPS]
    for (stamp, msg), us in zip(images, STAMPS):
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == us * 1000
        assert msg.header.frame_id == "mono_rear_optical"
        if encoding == "rgb8":
            assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", H, W, 3 * W)
            decoded = msg.data.reshape(H, W, 3)
        else:
            assert msg.format == "jpeg"
            decoded = cv2.imdecode(msg.data, cv2.IMREAD_COLOR)[:, :, ::-1]
        err = np.abs(decoded[2:-2, 2:-2].astype(int) - originals[us][2:-2, 2:-2]).mean()
        assert err < 6.0
    K = infos[0][1].k.reshape(3, 3)
    np.testing.assert_allclose(K, [[40, 0, 31], [0, 41, 23], [0, 0, 1]])
    (tf,) = tfs[0][1].transforms
    assert (tf.header.frame_id, tf.child_frame_id) == ("base_link", "mono_rear_optical")
    q = xyzw_to_wxyz(np.array([tf.transform.rotation.x, tf.transform.rotation.y, tf.transform.rotation.z,
                               tf.transform.rotation.w]))
    expected = raw.optical_pose_in_base()
    np.testing.assert_allclose(quat_wxyz_to_matrix(q), expected[:3, :3], atol=1e-9)
    t = tf.transform.translation
    np.testing.assert_allclose([t.x, t.y, t.z], expected[:3, 3], atol=1e-9)


def test_raw_bag_rejects_bad_encoding(sequence, tmp_path):
    seq, models, extrinsics, _ = sequence
    raw = rr.RawSequence(seq, "mono_rear", models, extrinsics)
    with pytest.raises(BagError, match="encoding"):
        write_robotcar_raw_bag(tmp_path / "x", raw, encoding="mono16")


def test_make_bag_cli_robotcar_raw(sequence, tmp_path):
    from offline_tools import make_bag

    seq, models, extrinsics, _ = sequence
    out = tmp_path / "cli_raw"
    rc = make_bag.main(["robotcar-raw", str(out), "--sequence", str(seq), "--camera", "mono_rear",
                        "--models", str(models), "--extrinsics", str(extrinsics), "--encoding", "bgr8",
                        "--limit", "2", "--storage", "mcap"])
    assert rc == 0
    msgs = [(t, m) for t, _, m in read_messages(out)]
    images = [m for t, m in msgs if t == "/camera/image"]
    assert len(images) == 2 and images[0].encoding == "bgr8"
    assert sum(t == "/camera/camera_info" for t, _ in msgs) == 2
