"""retrieval_check: scoring, ranking and the command line on fabricated image folders."""
import json

import cv2
import numpy as np
import pytest
import torch

from offline_tools import retrieval_check as rc
from ros2_s2dhm.features.preprocess import prepare_image


def _texture(seed: int, w: int = 64, h: int = 48) -> np.ndarray:
    """A distinct smooth random RGB texture (blobs of a few sizes)."""
    rng = np.random.default_rng(seed)
    layers = [cv2.resize(rng.random((h // s, w // s, 3)).astype(np.float32), (w, h))
              for s in (2, 6, 12)]
    return (255 * sum(layers) / len(layers)).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """6 database images and the same places as darker queries (names sort like the ids)."""
    root = tmp_path_factory.mktemp("retrieval_check")
    for side in ("day", "night"):
        (root / side).mkdir()
    for i in range(6):
        day = _texture(i)
        night = (day.astype(np.float32) * 0.6).astype(np.uint8)
        cv2.imwrite(str(root / "day" / f"{i:03d}.png"), cv2.cvtColor(day, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(root / "night" / f"{i:03d}.png"), cv2.cvtColor(night, cv2.COLOR_RGB2BGR))
    return root


def _run(folders, tmp_path, *extra):
    out = tmp_path / "results.json"
    code = rc.main(["--database", str(folders / "day"), "--queries", str(folders / "night"),
                    "--weights", "random", "--image-size", "64", "--device", "cpu",
                    "--out", str(out), *extra])
    return code, out


def test_score_rankings_tolerance():
    rankings = np.array([[0, 3],    # query 0: right at rank 1
                         [2, 1],    # query 1: off by one at rank 1, exact at rank 2
                         [5, 0],    # query 2: wrong at both ranks (off by 3 and 2)
                         [3, 4]])   # query 3: exact at rank 1
    assert rc.score_rankings(rankings, 0, ks=(1, 2)) == {1: 0.5, 2: 0.75}
    assert rc.score_rankings(rankings, 1, ks=(1, 2)) == {1: 0.75, 2: 0.75}
    assert rc.score_rankings(rankings, 3, ks=(1,)) == {1: 1.0}


def test_rank_database_finds_noisy_copies():
    rng = np.random.default_rng(0)
    database = rng.normal(size=(40, 256)).astype(np.float32)
    queries = database + 0.05 * rng.normal(size=database.shape).astype(np.float32)
    ranked = rc.rank_database(database, queries, k=10)
    assert ranked.shape == (40, 10)
    assert (ranked[:, 0] == np.arange(40)).all()
    assert all(len(set(row)) == 10 for row in ranked)  # no database image twice


def test_descriptor_is_the_forward_pass_global_descriptor(random_network, folders):
    net, _ = random_network
    path = folders / "day" / "002.png"
    ours = rc.global_descriptors([path], net, 64, "cpu")
    tensor, _ = prepare_image(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), 64)
    with torch.no_grad():
        forward = net(tensor, detail=False).global_descriptor[0].numpy()
    np.testing.assert_allclose(ours[0], forward, rtol=1e-5, atol=1e-6)


def test_command_line_writes_scores(folders, tmp_path, capsys):
    code, out = _run(folders, tmp_path, "--tolerance", "0")
    assert code == 0
    results = json.loads(out.read_text())
    recalls = [results[f"recall@{k}"] for k in (1, 5, 10)]
    assert all(0.0 <= r <= 1.0 for r in recalls)
    assert recalls == sorted(recalls)
    assert recalls[2] == 1.0  # 6 images: every query's top 10 holds the whole database
    assert results["images"] == 6 and results["tolerance"] == 0
    assert np.array(results["rankings"]).shape == (6, 6)
    assert results["weights"]["kind"] == "random"
    top1 = [row[0] for row in results["rankings"]]
    count = max(top1.count(i) for i in set(top1))
    assert results["hub"]["share"] == pytest.approx(count / 6)
    assert results["recall@1"] == pytest.approx(np.mean(np.array(top1) == np.arange(6)))
    assert "recall@1" in capsys.readouterr().out


def test_descriptor_cache_skips_the_network(folders, tmp_path, monkeypatch):
    cache = tmp_path / "descriptors.npz"
    code, out = _run(folders, tmp_path, "--descriptors-cache", str(cache), "--tolerance", "0")
    assert code == 0 and cache.is_file()
    first = json.loads(out.read_text())
    assert first["descriptors_cached"] is False

    def no_network(*_args, **_kwargs):
        raise AssertionError("the descriptors should come from the cache")

    monkeypatch.setattr(rc, "global_descriptors", no_network)
    code, out = _run(folders, tmp_path, "--descriptors-cache", str(cache), "--tolerance", "1")
    assert code == 0
    second = json.loads(out.read_text())
    assert second["descriptors_cached"] is True
    assert second["rankings"] == first["rankings"]
    assert second["recall@1"] >= first["recall@1"]  # tolerance 1 forgives more than 0
    with pytest.raises(AssertionError, match="from the cache"):  # another size: not reused
        _run(folders, tmp_path, "--descriptors-cache", str(cache), "--image-size", "32")


def test_misaligned_folders_are_an_error(folders, tmp_path, capsys):
    fewer = tmp_path / "fewer"
    fewer.mkdir()
    for p in sorted((folders / "night").iterdir())[:5]:
        (fewer / p.name).write_bytes(p.read_bytes())
    code = rc.main(["--database", str(folders / "day"), "--queries", str(fewer),
                    "--weights", "random", "--image-size", "64", "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("retrieval_check: error:") and "index-aligned" in err
    assert rc.main(["--database", str(tmp_path / "missing"), "--queries", str(fewer),
                    "--weights", "random", "--device", "cpu"]) == 2
