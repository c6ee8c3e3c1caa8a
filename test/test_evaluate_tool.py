"""End to end: tiny synthetic set -> map -> evaluate / benchmark command-line tools."""
import csv
import json

import pytest
import torch

from offline_tools import benchmark, evaluate
from ros2_s2dhm.datasets import load_dataset
from ros2_s2dhm.datasets.synthetic import generate_synthetic
from ros2_s2dhm.evaluation.run import select_queries
from ros2_s2dhm.datasets.submission import read_submission
from ros2_s2dhm.features.checkpoints import load_network
from ros2_s2dhm.localizer import LocalizerConfig
from ros2_s2dhm.map_builder import MapBuildConfig, build_reference_map

IMAGE_SIZE = 128  # small: these tests measure plumbing, not accuracy


@pytest.fixture(scope="module")
def synthetic_map(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval_e2e")
    data = root / "data"
    generate_synthetic(data, seed=0, size="tiny")
    dataset = load_dataset(data)
    network, info = load_network(None, device="cpu", seed=0)
    build_reference_map(dataset, network, info.sha256, info.kind, root / "map",
                        MapBuildConfig(image_size=IMAGE_SIZE, max_keypoints=512), device="cpu",
                        progress=False)
    return data, root / "map", dataset


def test_evaluate_writes_complete_results(synthetic_map, tmp_path, capsys):
    data, map_dir, dataset = synthetic_map
    queries = select_queries(dataset.queries, limit=2)
    conditions = sorted({q.condition for q in queries})
    out = tmp_path / "out"
    rc = evaluate.main(["--dataset", str(data), "--map", str(map_dir), "--out", str(out),
                        "--ground-truth", str(data / "ground_truth.txt"), "--device", "cpu",
                        "--weights", "random", "--limit", "2", "--top-k", "3", "--quiet"])
    assert rc == 0
    rows = list(csv.DictReader((out / "queries.csv").open()))
    assert sorted(r["name"] for r in rows) == sorted(q.name for q in queries)  # none dropped
    localized = {r["name"] for r in rows if r["success"] == "1"}
    for method in ("rpnp", "fpnp"):
        assert set(read_submission(out / f"submission_{method}.txt")) == localized
    pairs = [line.split() for line in (out / "retrieval_pairs.txt").read_text().splitlines()]
    assert [q for q, _ in pairs] == [r["name"] for r in rows for _ in range(3)]  # top-3 each
    assert {ref for _, ref in pairs} <= {r.name for r in dataset.references}
    results = json.loads((out / "results.json").read_text())
    assert results["thresholds"] == [[0.05, 0.5], [0.25, 2], [0.5, 5], [5, 10]]
    assert results["unit"] == "m"
    assert set(results["retrieval"]["conditions"]) == set(conditions) | {"all"}
    assert results["retrieval"]["tolerance"] == [5, 30] and results["false_pose"] == [5, 10]
    assert 0 < results["retrieval"]["conditions"]["all"]["hub"]["share"] <= 100
    point = results["confidence"]["operating_point"]
    assert point["returned"] == len(localized) and point["false"] <= point["returned"]
    assert sorted(results["conditions"]) == conditions
    assert results["all"]["queries"] == len(queries)
    assert "RANDOM" in results["weights"]
    assert results["timing_ms"]["total"] > 0
    for cond in conditions:
        assert (out / "plots" / f"cumulative_{cond}.png").is_file()
    assert "Feature-PnP" in capsys.readouterr().out


def test_local_validation_uses_references_and_excludes_self(synthetic_map, tmp_path):
    data, map_dir, dataset = synthetic_map
    out = tmp_path / "lv"
    rc = evaluate.main(["--dataset", str(data), "--map", str(map_dir), "--out", str(out),
                        "--device", "cpu", "--weights", "random", "--local-validation",
                        "--limit", "2", "--top-k", "2", "--quiet", "--no-plots"])
    assert rc == 0
    rows = list(csv.DictReader((out / "queries.csv").open()))
    ref_names = {r.name for r in dataset.references}
    assert rows and {r["name"] for r in rows} <= ref_names
    assert all(r["top_reference"] != r["name"] for r in rows)  # the identical image is excluded
    assert json.loads((out / "results.json").read_text())["all"]["queries"] == len(rows)


def test_evaluate_reports_bad_inputs(synthetic_map, tmp_path, capsys):
    data, map_dir, _ = synthetic_map
    gt = tmp_path / "gt.txt"
    gt.write_text("rear/unknown.jpg 1 0 0 0 0 0 0\n")
    rc = evaluate.main(["--dataset", str(data), "--map", str(map_dir), "--out", str(tmp_path / "o"),
                        "--ground-truth", str(gt), "--device", "cpu", "--weights", "random", "--quiet"])
    assert rc == 2
    assert "no pose for" in capsys.readouterr().err
    rc = evaluate.main(["--dataset", str(data), "--map", str(tmp_path / "nomap"),
                        "--out", str(tmp_path / "o"), "--device", "cpu", "--weights", "random", "--quiet"])
    assert rc == 2
    assert "manifest.json" in capsys.readouterr().err


def test_benchmark_on_given_map(synthetic_map, tmp_path):
    data, map_dir, _ = synthetic_map
    devices = "cpu,cuda" if torch.cuda.is_available() else "cpu"
    out = tmp_path / "bench.json"
    content = benchmark.run(benchmark.parse_args(
        ["--dataset", str(data), "--map", str(map_dir), "--devices", devices, "--weights", "random",
         "--queries", "2", "--warmup", "1", "--top-k", "2", "--out", str(out), "--quiet",
         "--busy", "1"]))
    saved = json.loads(out.read_text())
    assert saved["yardstick_ms"] > 0 and saved["threads"] >= 1
    # the yardstick brackets the timed idle CPU queries; the ratios use the mean of both
    before, after = saved["yardstick_before_ms"], saved["yardstick_after_ms"]
    assert before > 0 and after > 0 and saved["yardstick_ms"] == pytest.approx(0.5 * (before + after))
    assert saved["yardstick_drifted"] == (abs(before - after) > 0.1 * saved["yardstick_ms"])
    busy = saved["contended"]  # the CPU queries again beside one spinning process
    assert busy["busy_processes"] == 1 and busy["cpu"]["stages"]["total"]["count"] == 2
    table = benchmark.format_contention(saved["devices"]["cpu"]["stages"], busy["cpu"]["stages"], 1)
    assert "backbone" in table and "x" in table.splitlines()[2]
    assert saved["devices"].keys() == content["devices"].keys()
    cpu = saved["devices"]["cpu"]
    assert cpu["queries"] == 2 and cpu["image_size"] == IMAGE_SIZE
    cascade = cpu["cascade"]
    assert (cascade["queries"], cascade["top_k"]) == (2, 2)
    assert 0 <= cascade["past_top_k"] <= cascade["past_batch"] <= 2
    assert 1 <= cascade["verified_max"] <= 2 + LocalizerConfig().retrieval_extra
    per_query = cpu["per_query"]  # what sets the tail: each timed query's references and time
    assert len(per_query) == 2 and all(q["total_ms"] > 0 for q in per_query)
    assert max(q["references_verified"] for q in per_query) == cascade["verified_max"]
    assert sum(q["success"] for q in per_query) == cpu["localized"]
    for stage in ("preprocess", "backbone", "retrieval", "matching", "total"):
        assert cpu["stages"][stage]["count"] == 2
        assert 0 < cpu["stages"][stage]["median"] <= cpu["stages"][stage]["p90"]


def test_evaluate_runs_unchanged_on_unseen_condition_names(synthetic_map, tmp_path):
    """A dataset in the same layout but with its own condition names (non-square images)."""
    import shutil

    data, map_dir, dataset = synthetic_map
    other = tmp_path / "other"
    shutil.copytree(data, other)
    renamed = {"sun": "clear-afternoon", "night": "midnight-drizzle"}
    for old, new in renamed.items():
        (other / "images" / old).rename(other / "images" / new)
    out = tmp_path / "out"
    rc = evaluate.main(["--dataset", str(other), "--map", str(map_dir), "--out", str(out),
                        "--ground-truth", str(other / "ground_truth.txt"), "--device", "cpu",
                        "--weights", "random", "--no-use-ratio-test", "--pnp-threshold-px", "3",
                        "--top-k", "3", "--conditions", ",".join(renamed.values()), "--quiet"])
    assert rc == 0
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["conditions"]) == sorted(renamed.values())
    assert results["all"]["queries"] == 4
    localized = read_submission(out / "submission_fpnp.txt")
    assert localized, "with the ratio test off the random network localizes some queries"
    assert dataset.queries[0].camera.width != dataset.queries[0].camera.height


def test_benchmark_scale_mode_replicates_the_map(synthetic_map, tmp_path):
    data, map_dir, _ = synthetic_map
    out = tmp_path / "bench.json"
    benchmark.run(benchmark.parse_args(
        ["--dataset", str(data), "--map", str(map_dir), "--devices", "cpu", "--weights", "random",
         "--queries", "1", "--warmup", "0", "--top-k", "2", "--scale-references", "20",
         "--work-dir", str(tmp_path / "work"), "--out", str(out), "--quiet", "--no-yardstick"]))
    scale = json.loads(out.read_text())["scale"]
    (row,) = scale["maps"]
    assert row["references"] == 20 and row["queries"] == 1
    assert 0 < row["open_s"] and 0 < row["rss_open_mb"] and row["mb_per_reference"] < 1.0
    assert row["stages"]["total"]["count"] == 1
    assert not (tmp_path / "work" / "map_x20").exists()  # the replicated map is removed after use
