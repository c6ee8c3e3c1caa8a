"""Retrieval ranks in the evaluation: hloc pairs file, per-condition top-1 / top-k / hub table,
and every distance bound (false pose, correct pose, retrieval distance) following the flags in
the map's unit. Fabricated outcomes and a fake localizer: no network runs here."""
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from offline_tools import evaluate
from ros2_s2dhm.datasets import QueryImage, load_dataset
from ros2_s2dhm.datasets.colmap_layout import UNIT_FILE, write_colmap_layout
from ros2_s2dhm.errors import DatasetError
from ros2_s2dhm.evaluation.recall import Bounds
from ros2_s2dhm.evaluation.reliability import retrieval_accuracy
from ros2_s2dhm.evaluation.report import (cascade_expansion, format_cascade_expansion,
                                          format_retrieval_table, score_outcomes)
from ros2_s2dhm.evaluation.run import QueryOutcome, outcome_from_result, write_retrieval_pairs
from ros2_s2dhm.datasets.submission import read_submission, write_submission
from ros2_s2dhm.features.checkpoints import WeightsInfo
from ros2_s2dhm.geometry.pose import Pose, pose_error
from ros2_s2dhm.localizer import LocalizationResult, LocalizerConfig


def pose_at(x: float, yaw_deg: float = 0.0) -> Pose:
    """A camera at (x, 0, 0) turned by yaw_deg about the world's y axis."""
    return Pose.from_center(Rotation.from_euler("y", yaw_deg, degrees=True).as_matrix(),
                            [x, 0.0, 0.0])


def shifted(truth: Pose, dt: float, dr_deg: float) -> Pose:
    """A pose whose centre is dt from truth's and whose rotation differs by exactly dr_deg."""
    dR = Rotation.from_euler("z", dr_deg, degrees=True).as_matrix()
    return Pose.from_center(dR @ truth.R, truth.center + np.array([dt, 0.0, 0.0]))


def outcome(name, condition, retrieved, pose=None, confidence=0.9) -> QueryOutcome:
    return QueryOutcome(name, condition, LocalizationResult(
        success=pose is not None, failure_reason=None if pose else "failed", pose=pose,
        pose_rpnp=pose, confidence=confidence, candidate_pose=pose,
        retrieved_names=list(retrieved)))


# ----------------------------------------------------------------------------- pairs file

def test_pairs_file_lists_every_querys_top_k_in_rank_order(tmp_path):
    failed = outcome_from_result(  # a localizer result that failed after retrieval
        QueryImage("night/rear/2.jpg", Path("night/rear/2.jpg"), None, "night"),
        LocalizationResult(success=False, failure_reason="low confidence",
                           retrieved_names=["db/c.jpg", "db/a.jpg", "db/b.jpg"]))
    outcomes = [outcome("night/rear/1.jpg", "night", ["db/b.jpg", "db/a.jpg", "db/c.jpg"],
                        Pose.identity()),
                failed,
                outcome("night/rear/3.jpg", "night", [])]  # refused before retrieval
    path = tmp_path / "out" / "retrieval_pairs.txt"
    assert write_retrieval_pairs(path, outcomes) == 6
    assert path.read_text().splitlines() == [
        "night/rear/1.jpg db/b.jpg", "night/rear/1.jpg db/a.jpg", "night/rear/1.jpg db/c.jpg",
        "night/rear/2.jpg db/c.jpg", "night/rear/2.jpg db/a.jpg", "night/rear/2.jpg db/b.jpg"]
    with pytest.raises(DatasetError, match="reference name 'db/a b.jpg'.*whitespace"):
        write_retrieval_pairs(path, [outcome("q.jpg", "night", ["db/a b.jpg"])])


# ----------------------------------------------------------------------------- retrieval table

REFERENCES = {"db/a.jpg": pose_at(0), "db/b.jpg": pose_at(10), "db/c.jpg": pose_at(20),
              "db/hub.jpg": pose_at(100), "db/turned.jpg": pose_at(10, yaw_deg=90)}


def retrieval_set():
    """8 queries, (truth x, retrieved): night n0 (0, hub a b), n1 (10, hub c a), n2 (20, hub c),
    n3 (10, b hub); day d0 (0, a b), d1 (10, turned b), d2 (3, a), d3 (0, nothing retrieved).
    db/hub.jpg is the top-1 of 3 of the 4 night queries; db/turned.jpg is at d1's spot but
    looks 90 deg away."""
    spec = [("night/n0", 0, ["db/hub.jpg", "db/a.jpg", "db/b.jpg"]),
            ("night/n1", 10, ["db/hub.jpg", "db/c.jpg", "db/a.jpg"]),
            ("night/n2", 20, ["db/hub.jpg", "db/c.jpg"]),
            ("night/n3", 10, ["db/b.jpg", "db/hub.jpg"]),
            ("day/d0", 0, ["db/a.jpg", "db/b.jpg"]),
            ("day/d1", 10, ["db/turned.jpg", "db/b.jpg"]),
            ("day/d2", 3, ["db/a.jpg"]),
            ("day/d3", 0, [])]
    truth = {name: pose_at(x) for name, x, _ in spec}
    return [outcome(name, name.split("/")[0], retrieved) for name, _, retrieved in spec], truth


def test_retrieval_accuracy_per_condition_with_hub():
    outcomes, truth = retrieval_set()
    acc = retrieval_accuracy(outcomes, truth, REFERENCES, distance=5.0)
    assert list(acc) == ["day", "night", "all"]
    assert {c: (r["queries"], r["top1"], r["topk"]) for c, r in acc.items()} == {
        "day": (4, 50.0, 75.0), "night": (4, 25.0, 75.0), "all": (8, 37.5, 75.0)}
    assert acc["night"]["hub"] == {"reference": "db/hub.jpg", "queries": 3, "share": 75.0}
    assert acc["day"]["hub"] == {"reference": "db/a.jpg", "queries": 2, "share": 50.0}
    assert acc["all"]["hub"] == {"reference": "db/hub.jpg", "queries": 3, "share": 37.5}
    # 12 instead of 5: n1's c and a (10 away) become right; the turned reference never does
    wide = retrieval_accuracy(outcomes, truth, REFERENCES, distance=12.0)
    assert (wide["night"]["top1"], wide["night"]["topk"]) == (25.0, 100.0)
    assert (wide["day"]["top1"], wide["day"]["topk"]) == (50.0, 75.0)
    assert wide["all"]["topk"] == 87.5


def test_retrieval_table_rows_and_stated_bound():
    outcomes, truth = retrieval_set()
    table = format_retrieval_table(retrieval_accuracy(outcomes, truth, REFERENCES, 5.0), 3,
                                   5.0, 30.0, "sfm")
    lines = table.splitlines()
    assert "within 5 sfm and 30°" in lines[0]
    assert lines[1].split()[:6] == ["retrieval", "N", "top-1", "%", "top-3", "%"]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert rows == {"day": ["4", "50.0", "75.0", "50.0", "db/a.jpg"],
                    "night": ["4", "25.0", "75.0", "75.0", "db/hub.jpg"],
                    "all": ["8", "37.5", "75.0", "37.5", "db/hub.jpg"]}


def test_retrieved_reference_missing_from_the_map_is_named():
    outcomes, truth = retrieval_set()
    references = {k: v for k, v in REFERENCES.items() if k != "db/c.jpg"}
    with pytest.raises(DatasetError, match="night/n1: retrieved reference 'db/c.jpg' has no pose"):
        retrieval_accuracy(outcomes, truth, references)


# ----------------------------------------------------------------------------- bounds and unit

REQUIRED = ["--dataset", "d", "--map", "m", "--out", "o"]


def sfm_outcomes():
    """5 returned poses in an 'sfm' map, errors (distance, deg): (20, 1) (60, 1) (0.5, 15)
    (0.1, 0.5) (0.8, 1); each query retrieved one reference 8 units from its true centre."""
    errors = [(20, 1), (60, 1), (0.5, 15), (0.1, 0.5), (0.8, 1)]
    truth = {f"site/{i}.jpg": pose_at(100.0 * i) for i in range(len(errors))}
    references = {f"db/{i}.jpg": pose_at(100.0 * i + 8) for i in range(len(errors))}
    outcomes = [outcome(name, "site", [f"db/{i}.jpg"], shifted(truth[name], *errors[i]))
                for i, name in enumerate(truth)]
    return outcomes, truth, references


def score(bounds: Bounds):
    outcomes, truth, references = sfm_outcomes()
    return score_outcomes(outcomes, truth, references, bounds, top_k=1, min_confidence=0.5,
                          weights="w", timing_ms={"total": 1.0})


def test_defaults_come_from_one_place_and_bad_flags_are_refused():
    assert evaluate.bounds_from_args(evaluate.parse_args(REQUIRED), "m") == Bounds()
    for bad in (["--false-pose", "50"], ["--false-pose", "50,-1"], ["--retrieval-distance", "0"],
                ["--retrieval-distance", "far"], ["--correct-pose", "a,b"]):
        with pytest.raises(SystemExit):
            evaluate.parse_args(REQUIRED + bad)


def test_false_pose_correct_pose_and_retrieval_distance_follow_the_flags_in_sfm():
    default = evaluate.bounds_from_args(evaluate.parse_args(REQUIRED), "sfm")
    flagged = evaluate.bounds_from_args(evaluate.parse_args(
        REQUIRED + ["--false-pose", "50,10", "--correct-pose", "1,2", "--retrieval-distance", "12"]),
        "sfm")
    assert (flagged.false_pose, flagged.correct, flagged.retrieval_distance) == ((50, 10), (1, 2), 12)
    d, f = score(default), score(flagged)
    # false: default (5, 10°) -> (20,1) (60,1) (0.5,15); at (50, 10°) the 20-unit pose is not false
    assert [d.results["all"][m]["false_poses"] for m in ("rpnp", "fpnp")] == [3, 3]
    assert [f.results["all"][m]["false_poses"] for m in ("rpnp", "fpnp")] == [2, 2]
    assert (d.results["false_pose"], f.results["false_pose"]) == ([5, 10], [50, 10])
    # the confidence curve: correct within (0.25, 2°) -> 1 pose, within (1, 2°) -> 2
    assert {k: d.results["confidence"]["operating_point"][k] for k in ("returned", "correct", "false")} \
        == {"returned": 5, "correct": 1, "false": 3}
    assert {k: f.results["confidence"]["operating_point"][k] for k in ("returned", "correct", "false")} \
        == {"returned": 5, "correct": 2, "false": 2}
    assert f.results["confidence"]["correct"] == [1, 2] and f.results["confidence"]["false_pose"] == [50, 10]
    # the references are 8 units away: wrong place within 5, right place within 12
    assert (d.retrieval["all"]["top1"], f.retrieval["all"]["top1"]) == (0.0, 100.0)
    assert f.results["retrieval"]["tolerance"] == [12, 30]
    assert f.results["unit"] == "sfm"
    recall, retrieval, point = f.tables
    assert "false>50sfm,10°" in recall.splitlines()[1]
    assert "within 12 sfm and 30°" in retrieval
    assert point == ("min_confidence 0.5: 5 of 5 poses returned, 2 within (1 sfm, 2°), 2 false "
                     "(beyond (50 sfm, 10°))")
    json.dumps(f.results, allow_nan=False)  # strict JSON


# ----------------------------------------------------------------------------- the tool, end to end

class FakeMap:
    def __init__(self, references, unit):
        self.names = [r.name for r in references]
        self.poses = [r.pose for r in references]
        self.unit = unit

    def __len__(self):
        return len(self.names)

    def pose(self, i):
        return self.poses[i]


class FakeLocalizer:
    """Query j (in dataset order) retrieves references j+1, j, j+2 (mod N); night queries all
    retrieve reference 0 first. Query 0 is returned 20 units from its truth, the rest exactly."""

    def __init__(self, dataset, truth, unit):
        self.map = FakeMap(dataset.references, unit)
        self.config = LocalizerConfig(top_k=3)
        self.truth = truth
        self.order = {q.path: j for j, q in enumerate(dataset.queries)}
        self.names = {q.path: q.name for q in dataset.queries}

    def retrieved(self, path):
        j, n = self.order[path], len(self.map)
        first = 0 if self.names[path].startswith("night/") else (j + 1) % n
        return [self.map.names[first], self.map.names[j % n], self.map.names[(j + 2) % n]]

    def localize(self, image, camera, **kwargs):
        name = self.names[image]
        pose = shifted(self.truth[name], 20.0 if self.order[image] == 0 else 0.0, 0.0)
        return LocalizationResult(success=True, pose=pose, pose_rpnp=pose, candidate_pose=pose,
                                  confidence=0.9, retrieved_names=self.retrieved(image),
                                  reference_names=self.retrieved(image)[:2],
                                  timings_ms={"total": 1.0})


@pytest.fixture(scope="module")
def sfm_site(tiny_synthetic, tmp_path_factory):
    """The tiny synthetic set as a COLMAP layout whose unit.txt says 'sfm', and fabricated query
    poses (query j at reference j's pose)."""
    root = write_colmap_layout(load_dataset(tiny_synthetic.root), tmp_path_factory.mktemp("sfm") / "site")
    (root / UNIT_FILE).write_text("sfm\n")
    dataset = load_dataset(root, warn_unit=False)
    truth = {q.name: dataset.references[j % len(dataset.references)].pose
             for j, q in enumerate(dataset.queries)}
    write_submission(root / "gt.txt", truth)
    return root, dataset, truth


def run_tool(monkeypatch, site, out, *flags):
    root, dataset, truth = site
    info = WeightsInfo("test", "fake.pth", "0" * 64, random=False)
    monkeypatch.setattr(evaluate, "build_localizer",
                        lambda *a, **k: (FakeLocalizer(dataset, truth, "sfm"), info))
    monkeypatch.setattr(evaluate, "read_image", lambda path: path)
    rc = evaluate.main(["--dataset", str(root), "--map", "unused", "--out", str(out),
                        "--ground-truth", str(root / "gt.txt"), "--device", "cpu", "--top-k", "3",
                        "--quiet", "--no-plots", *flags])
    assert rc == 0
    return json.loads((out / "results.json").read_text())


def test_evaluate_writes_pairs_and_follows_the_flags_in_an_sfm_map(sfm_site, monkeypatch, tmp_path,
                                                                   caplog):
    root, dataset, truth = sfm_site
    caplog.set_level(logging.WARNING)
    flagged = run_tool(monkeypatch, sfm_site, tmp_path / "flagged", "--false-pose", "50,10",
                       "--retrieval-distance", "1e-6")
    unit_warnings = [r for r in caplog.records if "unit 'sfm'" in r.getMessage()]
    assert len(unit_warnings) == 1, [r.getMessage() for r in caplog.records]
    assert "false pose > (50 sfm, 10°)" in unit_warnings[0].getMessage()

    fake = FakeLocalizer(dataset, truth, "sfm")
    pairs = (tmp_path / "flagged" / "retrieval_pairs.txt").read_text().splitlines()
    assert pairs == [f"{q.name} {ref}" for q in dataset.queries for ref in fake.retrieved(q.path)]
    assert len(pairs) == 3 * len(dataset.queries)
    submitted = set(read_submission(tmp_path / "flagged" / "submission_fpnp.txt"))
    assert {p.split()[0] for p in pairs} == submitted  # the submissions' names
    assert {p.split()[1] for p in pairs} <= set(fake.map.names)  # the map's names

    default = run_tool(monkeypatch, sfm_site, tmp_path / "default")
    assert (default["all"]["fpnp"]["false_poses"], flagged["all"]["fpnp"]["false_poses"]) == (1, 0)
    assert default["false_pose"] == [5, 10] and flagged["false_pose"] == [50, 10]
    assert default["unit"] == flagged["unit"] == "sfm"
    # the second reference of every query is its own spot: top-k 100 % at any distance;
    # the top-1 is right where it lies within the flag's distance (and 30°) of the truth
    retrieval = flagged["retrieval"]
    assert retrieval["tolerance"] == [1e-6, 30] and retrieval["top_k"] == 3
    assert retrieval["conditions"]["all"]["topk"] == 100.0
    night = [q.name for q in dataset.queries if q.condition == "night"]
    assert retrieval["conditions"]["night"]["hub"] == {
        "reference": fake.map.names[0], "queries": len(night), "share": 100.0}
    top1_errors = [pose_error(fake.map.poses[fake.map.names.index(fake.retrieved(q.path)[0])],
                              truth[q.name]) for q in dataset.queries]

    def top1_percent(distance):
        return 100.0 * np.mean([dt <= distance and dr <= 30.0 for dt, dr in top1_errors])

    assert top1_percent(1e-6) < top1_percent(5.0)  # the flag makes a difference here
    assert retrieval["conditions"]["all"]["top1"] == pytest.approx(top1_percent(1e-6))
    assert default["retrieval"]["conditions"]["all"]["top1"] == pytest.approx(top1_percent(5.0))
    text = (tmp_path / "flagged" / "results.txt").read_text()
    assert "false>50sfm,10°" in text and "within 1e-06 sfm and 30°" in text


# ----------------------------------------------------------------------------- cascade expansion

def test_cascade_expansion_counts_queries_past_the_first_batch_and_past_top_k():
    verified = [1, 2, 3, 12, 0]  # references matched per query; 0: refused before retrieval
    outcomes = [QueryOutcome(f"q{i}", "c", LocalizationResult(
                    success=False, failure_reason="x", reference_names=[f"r{j}" for j in range(n)]))
                for i, n in enumerate(verified)]
    cascade = cascade_expansion(outcomes, cascade_batch=2, top_k=10)
    assert cascade == {"queries": 5, "cascade_batch": 2, "top_k": 10, "verified_median": 2.0,
                       "verified_max": 12, "past_batch": 2, "past_top_k": 1}
    assert format_cascade_expansion(cascade) == (
        "cascade: 2 of 5 queries verified past the first 2 references, 1 past top-10; "
        "references verified per query: median 2, max 12")
