"""Map directory save/load and its validation errors."""
import json

import numpy as np
import pytest

from ros2_s2dhm.errors import MapFormatError
from ros2_s2dhm.geometry import Camera
from ros2_s2dhm.reference_map import ReferenceMap


def _map(n=3, k=5, c=8, d=4):
    rng = np.random.default_rng(0)
    return ReferenceMap(
        names=[f"overcast-reference/rear/{i}.jpg" for i in range(n)],
        cameras=[Camera("PINHOLE", 64, 48, np.array([50.0, 50.0, 31.5, 23.5]))] * n,
        rotations=np.stack([np.eye(3)] * n), translations=rng.normal(size=(n, 3)),
        keypoints=rng.uniform(0, 40, (n, k, 2)).astype(np.float32),
        points3d=rng.normal(size=(n, k, 3)), valid=rng.random((n, k)) > 0.2,
        descriptors=rng.normal(size=(n, k, c)).astype(np.float16),
        global_descriptors=rng.normal(size=(n, d)).astype(np.float32),
        pca={"mean": np.zeros(16, np.float32), "components": np.eye(d, 16, dtype=np.float32)},
        weights_sha256="ab" * 32, weights_kind="random", image_size=64)


def test_round_trip_is_memory_mapped_and_equal(tmp_path):
    m = _map()
    m.save(tmp_path / "map")
    back = ReferenceMap.load(tmp_path / "map", expected_weights_sha256="ab" * 32)
    assert isinstance(back.descriptors, np.memmap)
    assert back.names == m.names and back.image_size == 64
    for key in ("rotations", "translations", "keypoints", "points3d", "valid", "descriptors"):
        assert np.array_equal(getattr(back, key), getattr(m, key))
    assert np.array_equal(back.pca["components"], m.pca["components"])
    assert np.allclose(back.centers, -np.einsum("nji,nj->ni", m.rotations, m.translations))
    assert back.cameras[0].model == "PINHOLE" and back.cameras[0].width == 64


def test_refuses_map_of_other_weights(tmp_path):
    _map().save(tmp_path / "map")
    with pytest.raises(MapFormatError, match="other weights"):
        ReferenceMap.load(tmp_path / "map", expected_weights_sha256="cd" * 32)


def test_missing_map_and_wrong_version(tmp_path):
    with pytest.raises(MapFormatError, match="manifest.json is missing"):
        ReferenceMap.load(tmp_path / "nothing")
    _map().save(tmp_path / "map")
    manifest = json.loads((tmp_path / "map" / "manifest.json").read_text())
    manifest["version"] = 99
    (tmp_path / "map" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MapFormatError, match="version 99"):
        ReferenceMap.load(tmp_path / "map")


def test_corrupted_or_missing_array_is_named(tmp_path):
    _map().save(tmp_path / "map")
    np.save(tmp_path / "map" / "descriptors.npy", np.zeros((3, 5, 8), np.float16))
    with pytest.raises(MapFormatError, match="descriptors.npy does not match the sha256"):
        ReferenceMap.load(tmp_path / "map")
    (tmp_path / "map" / "valid.npy").unlink()
    with pytest.raises(MapFormatError, match="valid.npy is missing"):
        ReferenceMap.load(tmp_path / "map", verify_hashes=False)


def test_inconsistent_shapes_are_rejected():
    m = _map()
    with pytest.raises(MapFormatError, match="'points3d' has shape"):
        ReferenceMap(**{**m.__dict__, "points3d": np.zeros((3, 4, 3))})
