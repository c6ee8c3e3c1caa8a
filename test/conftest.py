"""Shared fixtures: a tiny synthetic seasons set and a map built from it (once per session)."""
import os
import random

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("OMP_NUM_THREADS", "2")

TINY_IMAGE_SIZE = 128
TINY_MAX_KEYPOINTS = 512


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """A tiny synthetic set (seed 0): 128x96 images, 8 references, 2 queries x 5 conditions."""
    from ros2_s2dhm.datasets.synthetic.generate import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "tiny", seed=0, size="tiny")


@pytest.fixture(scope="session")
def random_network():
    """The seeded random network (no weights can be downloaded here) and its WeightsInfo."""
    from ros2_s2dhm.features.checkpoints import load_network

    return load_network(None)


@pytest.fixture(scope="session")
def tiny_map_dir(tiny_synthetic, random_network, tmp_path_factory):
    """A map of the tiny set built with the random network."""
    from ros2_s2dhm.datasets import load_dataset
    from ros2_s2dhm.map_builder import MapBuildConfig, build_reference_map

    net, info = random_network
    out = tmp_path_factory.mktemp("maps") / "tiny_map"
    build_reference_map(load_dataset(tiny_synthetic.root), net, info.sha256, info.kind, out,
                        MapBuildConfig(image_size=TINY_IMAGE_SIZE, max_keypoints=TINY_MAX_KEYPOINTS),
                        progress=False)
    return out


@pytest.fixture(scope="session")
def shipped_map(tiny_synthetic, tmp_path_factory):
    """A map of the tiny set built with the shipped weights (the node's default)."""
    from ros2_s2dhm.datasets import load_dataset
    from ros2_s2dhm.features.checkpoints import load_network
    from ros2_s2dhm.map_builder import MapBuildConfig, build_reference_map
    from ros2_s2dhm.runtime import resolve_weights

    network, info = load_network(resolve_weights("default"))
    assert not info.random, "the shipped weights are missing from the package"
    out = tmp_path_factory.mktemp("shipped") / "map"
    dataset = load_dataset(tiny_synthetic.root)
    build_reference_map(dataset, network, info.sha256, info.kind, out,
                        MapBuildConfig(image_size=128, max_keypoints=1024), progress=False)
    return out, dataset


@pytest.fixture
def ros_domain_id(monkeypatch):
    """A random ROS_DOMAIN_ID so concurrent test runs do not hear each other."""
    domain = str(random.randint(1, 101))
    monkeypatch.setenv("ROS_DOMAIN_ID", domain)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return domain
