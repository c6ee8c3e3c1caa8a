"""Map directory save/load, lazy row reading and its validation errors."""
import dataclasses
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ros2_s2dhm.errors import MapFormatError
from ros2_s2dhm.geometry import Camera
from ros2_s2dhm.reference_map import NpyRows, ReferenceMap, WorldPoints, replicate_map


def _map(n=3, k=5, c=8, d=4):
    rng = np.random.default_rng(0)
    return ReferenceMap(
        names=[f"overcast-reference/rear/{i}.jpg" for i in range(n)],
        cameras=[Camera("PINHOLE", 64, 48, np.array([50.0, 50.0, 31.5, 23.5]))] * n,
        rotations=Rotation.random(n, random_state=0).as_matrix(), translations=rng.normal(size=(n, 3)),
        keypoints=rng.uniform(0, 40, (n, k, 2)).astype(np.float32),
        points3d=rng.normal(size=(n, k, 3)) * 50, valid=np.arange(k)[None].repeat(n, 0) < [[4], [5], [2]][:n],
        descriptors=rng.integers(-127, 128, (n, k, c)).astype(np.int8),
        descriptor_scales=rng.uniform(0.001, 0.01, (n, k)).astype(np.float16),
        global_descriptors=rng.normal(size=(n, d)).astype(np.float32),
        pca={"mean": np.zeros(16, np.float32), "components": np.eye(d, 16, dtype=np.float32)},
        projection={"mean": np.zeros(32, np.float32), "components": np.eye(c, 32, dtype=np.float32),
                    "explained_variance": np.ones(c, np.float32), "whiten": np.array(False)},
        weights_sha256="ab" * 32, weights_kind="random", image_size=64)


def _saved_with_version(map_dir, version):
    """A saved map whose manifest claims another format version."""
    _map().save(map_dir)
    manifest = json.loads((map_dir / "manifest.json").read_text())
    manifest["version"] = version
    (map_dir / "manifest.json").write_text(json.dumps(manifest))


def _masked(m, key):
    """Row array with padding zeroed (the writer stores zeros there)."""
    arr = np.array(getattr(m, key))
    valid = np.asarray(m.valid)
    return np.where(valid.reshape(valid.shape + (1,) * (arr.ndim - 2)), arr, 0) if key != "valid" else arr


def test_round_trip_reads_rows_on_demand_and_equal(tmp_path):
    m = _map()
    m.save(tmp_path / "map")
    back = ReferenceMap.load(tmp_path / "map", expected_weights_sha256="ab" * 32)
    assert isinstance(back.descriptors, NpyRows) and isinstance(back.points3d, WorldPoints)
    assert isinstance(back.points3d.camera_rows, NpyRows) and back.points3d.camera_rows.dtype == np.float32
    assert back.names == m.names and back.image_size == 64 and back.unit == "m"
    for key in ("keypoints", "valid", "descriptors", "descriptor_scales"):
        assert np.array_equal(np.asarray(getattr(back, key)), _masked(m, key)), key
        assert np.array_equal(getattr(back, key)[[2, 0]], _masked(m, key)[[2, 0]]), key
        assert np.array_equal(getattr(back, key)[1], _masked(m, key)[1]), key
    # world points come back from their float32 camera-frame copies (points up to ~150 m away)
    valid = np.asarray(m.valid)
    assert back.points3d.dtype == np.float64 and back.points3d.shape == m.points3d.shape
    assert np.abs(np.asarray(back.points3d)[valid] - m.points3d[valid]).max() < 2e-5
    assert np.abs(back.points3d[[2, 0]][valid[[2, 0]]] - m.points3d[[2, 0]][valid[[2, 0]]]).max() < 2e-5
    assert np.abs(back.points3d[1] - m.points3d[1]).max() < 2e-5
    assert not np.array_equal(np.asarray(back.points3d.camera_rows)[valid], m.points3d[valid])
    for key in ("rotations", "translations", "global_descriptors"):
        assert np.array_equal(getattr(back, key), getattr(m, key))
    assert np.array_equal(back.pca["components"], m.pca["components"])
    assert np.array_equal(back.projection["components"], m.projection["components"])
    assert np.allclose(back.centers, -np.einsum("nji,nj->ni", m.rotations, m.translations))
    assert back.cameras[0].model == "PINHOLE" and back.cameras[0].width == 64
    manifest = json.loads((tmp_path / "map" / "manifest.json").read_text())
    assert manifest["descriptors"]["dim"] == 8 and manifest["descriptors"]["source_dim"] == 32


def test_detail_level_round_trips_and_is_optional(tmp_path):
    m = _map()
    assert not m.has_detail and m.detail_dim == 0
    rng = np.random.default_rng(1)
    detail = dataclasses.replace(
        m, detail_descriptors=rng.integers(-127, 128, (3, 5, 6)).astype(np.int8),
        detail_scales=rng.uniform(0.001, 0.01, (3, 5)).astype(np.float16))
    detail.save(tmp_path / "detail")
    back = ReferenceMap.load(tmp_path / "detail")
    assert back.has_detail and back.detail_dim == 6 and isinstance(back.detail_descriptors, NpyRows)
    for key in ("detail_descriptors", "detail_scales"):
        assert np.array_equal(np.asarray(getattr(back, key)), _masked(detail, key)), key
    manifest = json.loads((tmp_path / "detail" / "manifest.json").read_text())
    assert manifest["detail"] == {"layer": "relu2_2", "stride": 2, "dim": 6, "projected": False,
                                  "quantization": "int8, one float16 scale per vector"}
    assert ReferenceMap.verify(tmp_path / "detail") == len(manifest["arrays"])
    copy = replicate_map(back, tmp_path / "copies", 5)  # replicated maps keep the level
    assert ReferenceMap.load(copy).detail_descriptors[4].tobytes() == back.detail_descriptors[1].tobytes()
    m.save(tmp_path / "plain")  # a map without it (built before the level existed) still opens
    plain = ReferenceMap.load(tmp_path / "plain")
    assert not plain.has_detail and "detail" not in json.loads((tmp_path / "plain" / "manifest.json").read_text())
    with pytest.raises(MapFormatError, match="detail_scales"):
        dataclasses.replace(m, detail_descriptors=detail.detail_descriptors)
    with pytest.raises(MapFormatError, match="detail_descriptors"):
        dataclasses.replace(detail, detail_descriptors=detail.detail_descriptors[:2])


def test_retrieval_hub_term_round_trips_and_is_optional(tmp_path):
    from ros2_s2dhm.retrieval import neighbour_similarity

    m = _map()
    assert m.global_neighbour_similarity is None
    hub = dataclasses.replace(m, global_neighbour_similarity=np.array([0.5, 0.25, 0.125], np.float32))
    hub.save(tmp_path / "hub")
    back = ReferenceMap.load(tmp_path / "hub")
    assert np.array_equal(back.global_neighbour_similarity, hub.global_neighbour_similarity)
    m.save(tmp_path / "plain")  # built before hubness reduction: opens without it
    assert ReferenceMap.load(tmp_path / "plain").global_neighbour_similarity is None
    # a replicated map recomputes it over the copies (each copy's neighbour is its twin)
    big = ReferenceMap.load(replicate_map(back, tmp_path / "big", 6))
    assert np.allclose(big.global_neighbour_similarity,
                       neighbour_similarity(np.asarray(big.global_descriptors), 10), atol=1e-6)
    with pytest.raises(MapFormatError, match="global_neighbour_similarity"):
        dataclasses.replace(m, global_neighbour_similarity=np.zeros(2, np.float32))


def test_opening_reads_no_row_array_whole(tmp_path, monkeypatch):
    _map().save(tmp_path / "map")
    loaded = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda path, *a, **k: loaded.append(str(path)) or real_load(path, *a, **k))
    ref = ReferenceMap.load(tmp_path / "map")
    assert loaded and not [p for p in loaded if any(
        p.endswith(f"/{name}.npy") for name in ("descriptors", "descriptor_scales", "points_camera", "keypoints", "valid"))]
    read = []
    real_pread = __import__("os").pread
    monkeypatch.setattr("os.pread", lambda fd, n, off: read.append(n) or real_pread(fd, n, off))
    ref.descriptors[[1]]
    assert read == [ref.descriptors.row_bytes]  # exactly one row read


def test_truncated_or_changed_array_is_named(tmp_path):
    _map().save(tmp_path / "map")
    path = tmp_path / "map" / "descriptors.npy"
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(MapFormatError, match="descriptors.npy: file is .* bytes.*truncated"):
        ReferenceMap.load(tmp_path / "map")
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # same size, other content
    ReferenceMap.load(tmp_path / "map")  # opening checks sizes and headers only
    with pytest.raises(MapFormatError, match="descriptors.npy does not match the sha256"):
        ReferenceMap.verify(tmp_path / "map")
    path.write_bytes(data)
    assert ReferenceMap.verify(tmp_path / "map") == len(json.loads(
        (tmp_path / "map" / "manifest.json").read_text())["arrays"])


def test_version_2_map_with_world_points_still_opens(tmp_path):
    """A map written before version 3 (world points in float64, no detail projection) opens,
    and gives back its points exactly."""
    m = _map()
    m.save(tmp_path / "map")
    d = tmp_path / "map"
    (d / "points_camera.npy").unlink()
    world = _masked(m, "points3d")
    np.save(d / "points3d.npy", world)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["version"] = 2
    del manifest["arrays"]["points_camera"]
    manifest["arrays"]["points3d"] = {"shape": list(world.shape), "dtype": "float64", "sha256": ""}
    (d / "manifest.json").write_text(json.dumps(manifest))
    back = ReferenceMap.load(d)
    assert isinstance(back.points3d, NpyRows) and np.array_equal(back.points3d[[1, 2]], world[[1, 2]])
    (d / "points3d.npy").unlink()
    del manifest["arrays"]["points3d"]
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MapFormatError, match="points_camera or points3d"):
        ReferenceMap.load(d)


def test_projections_are_stored_in_float16_when_exact(tmp_path):
    """A map's PCAs rounded to float16 are stored at half the size and read back exactly; a
    detail projection must match the detail level's dimension."""
    from ros2_s2dhm.features.pca import PCA

    rng = np.random.default_rng(3)
    pca = PCA.fit(rng.normal(size=(40, 16)), dim=6).rounded_to_half()
    assert pca.components.dtype == np.float32 and pca.state_dict()["components"].dtype == np.float16
    assert PCA.fit(rng.normal(size=(40, 16)), dim=6).state_dict()["components"].dtype == np.float32
    m = dataclasses.replace(
        _map(), detail_descriptors=rng.integers(-127, 128, (3, 5, 6)).astype(np.int8),
        detail_scales=rng.uniform(0.001, 0.01, (3, 5)).astype(np.float16),
        detail_projection=pca.state_dict())
    m.save(tmp_path / "map")
    back = ReferenceMap.load(tmp_path / "map")
    assert back.detail_projection["components"].dtype == np.float16
    assert np.array_equal(PCA.from_state_dict(back.detail_projection).components, pca.components)
    assert json.loads((tmp_path / "map" / "manifest.json").read_text())["detail"]["projected"]
    copy = ReferenceMap.load(replicate_map(back, tmp_path / "copy", 4))
    assert np.array_equal(copy.detail_projection["components"], back.detail_projection["components"])
    with pytest.raises(MapFormatError, match="detail_projection has 6 components"):
        dataclasses.replace(m, detail_descriptors=m.detail_descriptors[..., :4])


def test_format_1_map_is_refused_with_rebuild_command(tmp_path):
    _saved_with_version(tmp_path / "map", 1)
    with pytest.raises(MapFormatError, match="version 1 .*build_map --dataset DIR --out MAP"):
        ReferenceMap.load(tmp_path / "map")


def test_replicated_map_cycles_rows(tmp_path):
    m = _map()
    m.save(tmp_path / "map")
    src = ReferenceMap.load(tmp_path / "map")
    big = ReferenceMap.load(replicate_map(src, tmp_path / "big", 7))
    assert len(big) == 7 and len(set(big.names)) == 7
    assert np.array_equal(big.descriptors[5], src.descriptors[2])
    assert np.array_equal(big.valid[[3, 4]], src.valid[[0, 1]])


def test_refuses_map_of_other_weights(tmp_path):
    _map().save(tmp_path / "map")
    with pytest.raises(MapFormatError, match="other weights"):
        ReferenceMap.load(tmp_path / "map", expected_weights_sha256="cd" * 32)


def test_missing_map_and_wrong_version(tmp_path):
    with pytest.raises(MapFormatError, match="manifest.json is missing"):
        ReferenceMap.load(tmp_path / "nothing")
    _saved_with_version(tmp_path / "map", 99)
    with pytest.raises(MapFormatError, match="version 99"):
        ReferenceMap.load(tmp_path / "map")


def test_missing_array_is_named(tmp_path):
    _map().save(tmp_path / "map")
    (tmp_path / "map" / "valid.npy").unlink()
    with pytest.raises(MapFormatError, match="valid.npy is missing"):
        ReferenceMap.load(tmp_path / "map")


def test_inconsistent_shapes_are_rejected():
    m = _map()
    with pytest.raises(MapFormatError, match="'points3d' has shape"):
        ReferenceMap(**{**dataclasses.asdict(m), "points3d": np.zeros((3, 4, 3))})
