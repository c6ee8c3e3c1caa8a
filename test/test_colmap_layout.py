"""A user's own COLMAP reconstruction as a dataset: the tiny synthetic set written as a binary
COLMAP model with pycolmap (sparse/ + images/ + queries_with_intrinsics.txt), read back by the
generic layout, mapped and localized with the cameras the query file states; a wrong-size or
missing query camera is a clear error, never a guess.

Needs datasets/colmap_layout.py, the map builder and the localizer.
"""
import shutil

import numpy as np
import pytest

from ros2_s2dhm.datasets import load_dataset
from ros2_s2dhm.datasets.colmap_layout import QUERY_LIST, write_colmap_layout
from ros2_s2dhm.datasets.query_list import read_query_list, write_query_list
from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.datasets.base import read_image
from ros2_s2dhm.datasets.submission import read_submission
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.geometry.pose import pose_error
from ros2_s2dhm.map_builder import MapBuildConfig, build_reference_map
from ros2_s2dhm.runtime import build_localizer, resolve_weights

CONFIG = MapBuildConfig(image_size=128, max_keypoints=1024)


@pytest.fixture(scope="module")
def colmap_set(tiny_synthetic, tmp_path_factory):
    source = load_dataset(tiny_synthetic.root)
    out = write_colmap_layout(source, tmp_path_factory.mktemp("colmap") / "site")
    return source, out


def test_round_trip_through_a_binary_colmap_model(colmap_set):
    source, root = colmap_set
    assert (root / "sparse" / "images.bin").is_file() and (root / QUERY_LIST).is_file()
    dataset = load_dataset(root)  # chosen by its layout
    assert dataset.unit == "m"
    assert [r.name for r in dataset.references] == [r.name for r in source.references]
    for a, b in zip(source.references, dataset.references):
        dt, dr = pose_error(a.pose, b.pose)
        assert dt < 1e-9 and dr < 1e-6
        assert np.allclose(a.keypoints, b.keypoints) and a.camera == b.camera
        assert np.allclose(source.points3d[a.point_ids], dataset.points3d[b.point_ids])
    assert len(dataset.queries) == len(source.queries)
    for a, b in zip(source.queries, dataset.queries):
        assert a.camera == b.camera and b.path.is_file()


def test_map_and_localize_with_the_stated_query_cameras(colmap_set, shipped_map, tmp_path):
    """The same images and model through either layout: the same poses, and the day queries
    within (0.25 m, 2 deg) of the ground truth."""
    source, root = colmap_set
    dataset = load_dataset(root, format="colmap")
    network, info = load_network(resolve_weights("default"))
    build_reference_map(dataset, network, info.sha256, info.kind, tmp_path / "map", CONFIG,
                        progress=False)
    localizer, _ = build_localizer(tmp_path / "map", "default", "cpu", top_k=3,
                                   pnp_threshold_px=3.0)
    seasons_localizer, _ = build_localizer(shipped_map[0], "default", "cpu", top_k=3,
                                           pnp_threshold_px=3.0)
    truth = read_submission(source.root / "ground_truth.txt")
    by_path = {q.path.name: q for q in source.queries}  # the ground truth's names
    errors = {}
    for query in dataset.queries:
        image = read_image(query.path)
        result = localizer.localize(image, query.camera)
        same = seasons_localizer.localize(image, by_path[query.path.name].camera)
        assert result.success == same.success, query.name
        if result.success:
            dt, dr = pose_error(result.pose, same.pose)
            assert dt < 1e-3 and dr < 1e-2, (query.name, dt, dr)
            errors[query.name] = pose_error(result.pose, truth[by_path[query.path.name].name])
    good = [name for name, (dt, dr) in errors.items() if dt < 0.25 and dr < 2.0]
    print(f"\nCOLMAP layout: {len(errors)}/{len(dataset.queries)} localized, {len(good)} within "
          f"(0.25 m, 2 deg): {errors}")
    day = [q.name for q in dataset.queries if q.name.split("/")[0] in ("sun", "rain")]
    assert set(day) <= set(good), errors
    assert all(dt < 5.0 and dr < 10.0 for dt, dr in errors.values()), errors  # no false pose


def test_query_cameras_are_stated_never_guessed(colmap_set, tmp_path):
    _, root = colmap_set
    site = tmp_path / "site"
    shutil.copytree(root, site)
    entries = read_query_list(site / QUERY_LIST)
    name, camera = entries[0]
    wrong = camera.scaled(0.5, 0.5, width=camera.width // 2, height=camera.height // 2)
    write_query_list(site / QUERY_LIST, [(name, wrong), *entries[1:]])
    with pytest.raises(DatasetError, match=r"the image is 128x96 but its camera says 64x48"):
        load_dataset(site)
    (site / QUERY_LIST).write_text("".join(f"{n}\n" for n, _ in entries))
    with pytest.raises(DatasetError, match="has no intrinsics"):
        load_dataset(site)
    (site / QUERY_LIST).unlink()
    (site / "queries.txt").write_text(f"{name}\n")
    with pytest.raises(DatasetError, match="never guessed"):
        load_dataset(site)
    (site / "queries.txt").unlink()
    assert load_dataset(site).queries == []  # references only: a map can be built
    (site / "unit.txt").write_text("sfm\n")
    assert load_dataset(site).unit == "sfm"
