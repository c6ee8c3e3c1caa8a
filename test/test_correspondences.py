"""Larsson correspondence .mat (v7.3 / HDF5) reader and writer."""
import h5py
import numpy as np
import pytest

from ros2_s2dhm.datasets.correspondences import read_correspondences_mat, write_correspondences_mat
from ros2_s2dhm.errors import DatasetError


def _points(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 95, (n, 2)), rng.uniform(0, 95, (n, 2)), rng.uniform(0, 50, n)


def test_round_trip_and_public_layout(tmp_path):
    pt_i, pt_j, dist = _points(7)
    path = write_correspondences_mat(tmp_path / "c.mat", "night/rear/1.jpg", "overcast-reference/rear/2.jpg",
                                     pt_i, pt_j, dist)
    loaded = read_correspondences_mat(path)
    assert loaded.image_i == "night/rear/1.jpg"
    assert loaded.image_j == "overcast-reference/rear/2.jpg"
    np.testing.assert_array_equal(loaded.pt_i, pt_i)
    np.testing.assert_array_equal(loaded.pt_j, pt_j)
    np.testing.assert_array_equal(loaded.dist_from_center, dist)
    assert len(loaded) == 7
    with h5py.File(path, "r") as handle:  # MATLAB storage: transposed arrays, uint16 chars
        assert handle["im_i_path"].dtype == np.uint16
        assert handle["im_i_path"].shape == (len("night/rear/1.jpg"), 1)
        assert handle["pt_i"].shape == (7, 2)
        assert handle["dist_from_center"].shape == (1, 7)
        assert handle["im_j_path"].attrs["MATLAB_class"] == b"char"
    assert path.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"


def test_reads_file_written_by_another_tool(tmp_path):
    """A plain HDF5 file (no MATLAB header) with (2, N) points is read the same way."""
    pt_i, pt_j, dist = _points(5, seed=1)
    path = tmp_path / "other.mat"
    with h5py.File(path, "w") as handle:
        handle["im_i_path"] = np.array([ord(c) for c in "a/b.jpg"], dtype=np.uint16)[:, None]
        handle["im_j_path"] = np.array([ord(c) for c in "c/d.jpg"], dtype=np.uint16)[:, None]
        handle["pt_i"] = pt_i.T
        handle["pt_j"] = pt_j.T
        handle["dist_from_center"] = dist[:, None]
    loaded = read_correspondences_mat(path)
    assert (loaded.image_i, loaded.image_j) == ("a/b.jpg", "c/d.jpg")
    np.testing.assert_array_equal(loaded.pt_j, pt_j)


def test_errors_name_path_and_field(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        read_correspondences_mat(tmp_path / "missing.mat")
    not_hdf5 = tmp_path / "v5.mat"
    not_hdf5.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
    with pytest.raises(DatasetError, match="v7.3"):
        read_correspondences_mat(not_hdf5)
    partial = tmp_path / "partial.mat"
    with h5py.File(partial, "w") as handle:
        handle["pt_i"] = np.zeros((3, 2))
    with pytest.raises(DatasetError, match="im_i_path"):
        read_correspondences_mat(partial)
    pt_i, pt_j, dist = _points(4)
    with pytest.raises(DatasetError, match="dist_from_center"):
        write_correspondences_mat(tmp_path / "bad.mat", "a", "b", pt_i, pt_j, dist[:3])
    with pytest.raises(DatasetError, match="pt_i"):
        write_correspondences_mat(tmp_path / "bad.mat", "a", "b", pt_i[:, :1], pt_j, dist)
