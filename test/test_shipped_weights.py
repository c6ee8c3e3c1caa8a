"""The shipped default weights: format, size, and that they localize where random weights cannot."""
import pytest

from ros2_s2dhm.datasets import load_dataset, read_image
from ros2_s2dhm.datasets.submission import read_submission
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.geometry import pose_error
from ros2_s2dhm.map_builder import MapBuildConfig, build_reference_map
from ros2_s2dhm.runtime import DEFAULT_WEIGHTS, build_localizer, resolve_weights

DAY = ("sun", "dusk")


def test_default_weights_are_shipped_small_and_trained():
    assert resolve_weights("default") == str(DEFAULT_WEIGHTS)
    assert DEFAULT_WEIGHTS.stat().st_size <= 32 * 2 ** 20
    _, info = load_network(DEFAULT_WEIGHTS)
    assert info.kind == "ros2_s2dhm" and not info.random
    assert (DEFAULT_WEIGHTS.parent / "MODEL_CARD.md").is_file()


def test_model_card_states_the_shipped_file():
    """The card's file sha256 and network hash (what a map built with the file records) are
    those of the shipped file as loaded, not of the float32 network it was saved from."""
    import hashlib
    import re

    card = (DEFAULT_WEIGHTS.parent / "MODEL_CARD.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| (File sha256|Network hash)[^|]*\| `([0-9a-f]{64})`",
                                                         card, re.M)}
    assert rows["File sha256"] == hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest()
    assert rows["Network hash"] == load_network(DEFAULT_WEIGHTS)[1].sha256


@pytest.fixture(scope="module")
def shipped_map(tiny_synthetic, tmp_path_factory):
    net, info = load_network(DEFAULT_WEIGHTS)
    out = tmp_path_factory.mktemp("shipped") / "map"
    build_reference_map(load_dataset(tiny_synthetic.root), net, info.sha256, info.kind, out,
                        MapBuildConfig(image_size=256, max_keypoints=512), progress=False)
    return out


def test_day_queries_localize_with_the_ratio_test_on(tiny_synthetic, shipped_map):
    loc, info = build_localizer(shipped_map, "default", "cpu", top_k=3, pnp_threshold_px=3.0)
    assert loc.config.matcher.use_ratio_test
    truth = read_submission(tiny_synthetic.root / "ground_truth.txt")
    queries = [q for q in load_dataset(tiny_synthetic.root).queries if q.condition in DAY]
    assert len(queries) == 4
    for q in queries:
        res = loc.localize(read_image(q.path), q.camera)
        assert res.success, f"{q.name}: {res.failure_reason}"
        dt, dr = pose_error(res.pose, truth[q.name])
        assert dt < 0.25 and dr < 2.0, f"{q.name}: {dt:.3f} m, {dr:.2f} deg"
