"""Submission files, recall, results.json, tables and plots of the evaluation package."""
import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from ros2_s2dhm.datasets.base import Dataset, QueryImage, ReferenceImage
from ros2_s2dhm.errors import DatasetError, InputImageError
from ros2_s2dhm.evaluation.plots import plot_all_conditions
from ros2_s2dhm.evaluation.recall import THRESHOLDS, evaluate_recall, recall_percent
from ros2_s2dhm.evaluation.report import (format_recall_table, format_timing_table, results_dict,
                                          summarize_timings, write_json)
from ros2_s2dhm.evaluation.run import (evaluate_queries, outcome_conditions, outcome_estimates,
                                       reference_queries, select_queries, write_outcomes_csv)
from ros2_s2dhm.datasets.submission import read_submission, write_submission
from ros2_s2dhm.geometry.camera import Camera
from ros2_s2dhm.geometry.pose import Pose
from ros2_s2dhm.localizer import LocalizationResult


def random_pose(rng) -> Pose:
    return Pose(Rotation.random(random_state=rng).as_matrix(), rng.normal(scale=50.0, size=3))


def perturbed(truth: Pose, dt_m: float, dr_deg: float, rng) -> Pose:
    """A pose whose camera centre is dt_m from truth's and whose rotation differs by dr_deg."""
    axis = rng.normal(size=3)
    dR = Rotation.from_rotvec(np.radians(dr_deg) * axis / np.linalg.norm(axis)).as_matrix()
    direction = rng.normal(size=3)
    center = truth.center + dt_m * direction / np.linalg.norm(direction)
    return Pose.from_center(dR @ truth.R, center)


def test_submission_round_trip_keeps_order_and_omits_failures(tmp_path):
    rng = np.random.default_rng(0)
    entries = {f"rear/{1000 + i}.jpg": random_pose(rng) for i in range(5)}
    entries["rear/999.jpg"] = None  # a failed query
    path = tmp_path / "sub" / "submission.txt"
    assert write_submission(path, entries) == 5
    lines = path.read_text().splitlines()
    assert [line.split()[0] for line in lines] == [n for n, p in entries.items() if p is not None]
    assert all(len(line.split()) == 8 for line in lines)
    back = read_submission(path)
    assert set(back) == {n for n, p in entries.items() if p is not None}
    for name, pose in back.items():
        np.testing.assert_allclose(pose.R, entries[name].R, atol=1e-12)
        np.testing.assert_allclose(pose.t, entries[name].t, atol=1e-12)


def test_submission_line_is_world_to_camera_wxyz(tmp_path):
    # 90 deg about z: q = (cos45, 0, 0, sin45); t as given (world-to-camera).
    pose = Pose(Rotation.from_euler("z", 90, degrees=True).as_matrix(), np.array([1.0, -2.0, 3.5]))
    path = tmp_path / "s.txt"
    write_submission(path, {"a.jpg": pose})
    values = np.array(path.read_text().split()[1:], dtype=float)
    np.testing.assert_allclose(values, [math.sqrt(0.5), 0, 0, math.sqrt(0.5), 1.0, -2.0, 3.5], atol=1e-12)


def test_read_submission_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "gt.txt"
    path.write_text("# ground truth\n\nq.jpg 1 0 0 0 1 2 3\n")
    poses = read_submission(path)
    assert list(poses) == ["q.jpg"]
    np.testing.assert_allclose(poses["q.jpg"].t, [1, 2, 3])


@pytest.mark.parametrize("bad_line, needle", [
    ("q2.jpg 1 0 0 0 1 2", "expected 8 fields"),
    ("q2.jpg 1 0 0 0 1 abc 3", "field 'ty'"),
    ("q2.jpg 1 0 nan 0 1 2 3", "field 'qy'"),
    ("q2.jpg 2 0 0 0 1 2 3", "unit quaternion"),
    ("q1.jpg 1 0 0 0 1 2 3", "repeats line 1"),
])
def test_bad_submission_line_names_path_and_line(tmp_path, bad_line, needle):
    path = tmp_path / "bad.txt"
    path.write_text(f"q1.jpg 1 0 0 0 0 0 0\n# comment\n{bad_line}\n")
    with pytest.raises(DatasetError) as info:
        read_submission(path)
    assert f"{path}:3" in str(info.value)
    assert needle in str(info.value)


def test_missing_submission_file_is_a_dataset_error(tmp_path):
    with pytest.raises(DatasetError, match="missing.txt"):
        read_submission(tmp_path / "missing.txt")


def test_name_with_whitespace_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="whitespace"):
        write_submission(tmp_path / "s.txt", {"rear/a b.jpg": Pose.identity()})


def hand_made_set():
    """8 queries in 2 conditions with known errors; 'rpnp' and 'fpnp' estimates.

    night (4 queries):  rpnp errors (0.1m,1°) (0.4m,1°) (3m,8°) fail
                        fpnp errors (0.1m,1°) (0.1m,1°) (0.1m,3°) (0.3m,1°)
    dusk  (4 queries):  rpnp errors (0.2m,1°) (0.2m,3°) (6m,1°) (0.1m,20°)
                        fpnp fails everywhere except (0.2m,1°)
    """
    rng = np.random.default_rng(1)
    errors = {
        "rpnp": [(0.1, 1), (0.4, 1), (3, 8), None, (0.2, 1), (0.2, 3), (6, 1), (0.1, 20)],
        "fpnp": [(0.1, 1), (0.1, 1), (0.1, 3), (0.3, 1), (0.2, 1), None, None, None],
    }
    names = [f"rear/{i}.jpg" for i in range(8)]
    conditions = {n: ("night" if i < 4 else "dusk") for i, n in enumerate(names)}
    truth = {n: random_pose(rng) for n in names}
    estimates = {m: {n: (None if e is None else perturbed(truth[n], e[0], e[1], rng))
                     for n, e in zip(names, errs)} for m, errs in errors.items()}
    del estimates["fpnp"][names[7]]  # absent from the estimates: still a failure, not dropped
    return conditions, estimates, truth


def test_recall_percentages_per_condition_and_overall():
    conditions, estimates, truth = hand_made_set()
    report = evaluate_recall(conditions, estimates, truth)
    assert report.thresholds == THRESHOLDS
    assert list(report.conditions) == ["dusk", "night"]
    night, dusk, all_ = report.conditions["night"], report.conditions["dusk"], report.all
    assert (night.queries, dusk.queries, all_.queries) == (4, 4, 8)
    np.testing.assert_allclose(night.methods["rpnp"].recall, [25.0, 50.0, 75.0])
    np.testing.assert_allclose(night.methods["fpnp"].recall, [50.0, 100.0, 100.0])
    np.testing.assert_allclose(dusk.methods["rpnp"].recall, [25.0, 50.0, 50.0])
    np.testing.assert_allclose(dusk.methods["fpnp"].recall, [25.0, 25.0, 25.0])
    np.testing.assert_allclose(all_.methods["rpnp"].recall, [25.0, 50.0, 62.5])
    np.testing.assert_allclose(all_.methods["fpnp"].recall, [37.5, 62.5, 62.5])
    assert night.methods["rpnp"].failures == 1 and dusk.methods["fpnp"].failures == 3
    # medians with failures as inf: night rpnp dt {0.1, 0.4, 3, inf} -> 1.7; dr {1, 1, 8, inf} -> 4.5
    assert night.methods["rpnp"].median_t_m == pytest.approx(1.7)
    assert night.methods["rpnp"].median_r_deg == pytest.approx(4.5)
    assert night.methods["fpnp"].median_t_m == pytest.approx(0.1)
    assert math.isinf(dusk.methods["fpnp"].median_t_m)  # 3 of 4 failed


def test_recall_boundaries_are_inclusive_and_empty_is_zero():
    assert recall_percent(np.array([0.25, 0.5]), np.array([2.0, 5.0])) == [50.0, 100.0, 100.0]
    assert recall_percent(np.array([]), np.array([])) == [0.0, 0.0, 0.0]


def test_missing_ground_truth_is_an_error():
    conditions, estimates, truth = hand_made_set()
    del truth["rear/3.jpg"]
    with pytest.raises(DatasetError, match="rear/3.jpg"):
        evaluate_recall(conditions, estimates, truth)


def test_results_json_has_the_documented_shape(tmp_path):
    conditions, estimates, truth = hand_made_set()
    report = evaluate_recall(conditions, estimates, truth)
    timing = {"backbone": 12.5, "total": 40.0}
    path = write_json(tmp_path / "results.json", results_dict(report, "random init (seed 0)", timing))
    data = json.loads(path.read_text())
    assert set(data) == {"thresholds", "false_pose", "conditions", "all", "weights", "timing_ms"}
    assert data["thresholds"] == [[0.25, 2], [0.5, 5], [5, 10]]
    assert data["false_pose"] == [5, 10]
    assert set(data["conditions"]) == {"night", "dusk"}
    for group in [*data["conditions"].values(), data["all"]]:
        assert set(group) == {"queries", "rpnp", "fpnp"}
        for method in ("rpnp", "fpnp"):
            assert set(group[method]) == {"recall", "median_t_m", "median_r_deg", "failures",
                                          "false_poses"}
            assert len(group[method]["recall"]) == 3
    assert data["conditions"]["night"]["queries"] == 4
    assert data["conditions"]["night"]["fpnp"]["recall"] == [50.0, 100.0, 100.0]
    assert data["conditions"]["dusk"]["fpnp"]["median_t_m"] is None  # infinite -> null
    assert data["weights"] == "random init (seed 0)" and data["timing_ms"] == timing


def test_recall_table_lists_every_condition_and_failures():
    conditions, estimates, truth = hand_made_set()
    table = format_recall_table(evaluate_recall(conditions, estimates, truth))
    rows = {line.split()[0]: line for line in table.splitlines()[3:] if line[0].isalpha()}
    assert set(rows) == {"dusk", "night", "all"}
    assert rows["night"].split()[1:5] == ["4", "|", "25.0", "50.0"]
    assert rows["all"].split()[-2] == "3"  # fpnp failures over all queries
    assert rows["all"].split()[-1] == "0"  # no false poses (every returned error < 5 m, 10 deg)
    sfm = format_recall_table(evaluate_recall(conditions, estimates, truth), unit="sfm")
    assert "0.25sfm,2°" in sfm.splitlines()[1]  # an SfM map's unit, not metres
    assert "RANSAC-PnP" in table and "Feature-PnP" in table


def test_timing_summary_median_p90_and_missing_stages():
    timings = [{"backbone": float(i), "total": 2.0 * i} for i in range(1, 11)]
    timings[0]["refine"] = 5.0
    summary = summarize_timings(timings)
    assert list(summary) == ["backbone", "refine", "total"]
    assert summary["backbone"]["median"] == 5.5
    assert summary["backbone"]["p90"] == pytest.approx(9.1)
    assert summary["refine"]["count"] == 1
    table = format_timing_table({"cpu": summary})
    assert "backbone" in table and "5.5" in table


def test_cumulative_plots_written_per_condition(tmp_path):
    conditions, estimates, truth = hand_made_set()
    paths = plot_all_conditions(evaluate_recall(conditions, estimates, truth), tmp_path / "plots")
    assert sorted(p.name for p in paths) == ["cumulative_all.png", "cumulative_dusk.png",
                                             "cumulative_night.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


# ----------------------------------------------------------------------------- evaluation loop

class FakeLocalizer:
    """Localizes queries with an even number, fails odd ones, raises on 'bad'; "images" are names."""

    def __init__(self, truth):
        self.truth = truth
        self.calls = []

    def localize(self, image, camera, **kwargs):
        name = image["name"]
        self.calls.append((name, kwargs))
        if name.endswith("bad.jpg"):
            raise InputImageError(f"{name}: unreadable")
        if int(name.rsplit("/", 1)[1].split(".")[0]) % 2:
            return LocalizationResult(success=False, failure_reason="too few inliers",
                                      timings_ms={"backbone": 2.0, "total": 3.0})
        rpnp = self.truth[name]
        fpnp = Pose(rpnp.R, rpnp.t + 0.01)
        return LocalizationResult(success=True, pose=fpnp, pose_rpnp=rpnp, pose_fpnp=fpnp,
                                  num_matches=50, num_inliers=30, reference_names=["ref/a.jpg"],
                                  refine_reason="converged_cost",
                                  timings_ms={"backbone": 2.0, "pnp": 1.0, "refine": 4.0, "total": 9.0})


def fake_reader(queries):
    """read_image stand-in: path -> {"name": query name}."""
    names = {q.path: q.name for q in queries}
    return lambda path: {"name": names[path]}


CAMERA = Camera.from_pinhole(50.0, 50.0, 31.5, 23.5, 64, 48)


def fake_queries(n_per_condition=3):
    return [QueryImage(f"rear/{i}.jpg", Path(f"{cond}/rear/{i}.jpg"), CAMERA, cond)
            for k, cond in enumerate(("night", "sun")) for i in range(k * 10, k * 10 + n_per_condition)]


def test_evaluate_queries_keeps_failures_and_exceptions(tmp_path):
    rng = np.random.default_rng(3)
    queries = fake_queries()
    queries[-1].name = "rear/bad.jpg"
    truth = {q.name: random_pose(rng) for q in queries}
    localizer = FakeLocalizer(truth)
    outcomes = evaluate_queries(localizer, queries, fake_reader(queries), progress=False)
    assert [o.name for o in outcomes] == [q.name for q in queries]
    assert [o.success for o in outcomes] == [True, False, True, True, False, False]
    assert outcomes[1].failure_reason == "too few inliers" and outcomes[1].pose("fpnp") is None
    assert outcomes[-1].failure_reason.startswith("InputImageError")
    assert all(kwargs == {} for _, kwargs in localizer.calls)
    estimates = outcome_estimates(outcomes)
    assert estimates["rpnp"]["rear/0.jpg"] is truth["rear/0.jpg"]
    report = evaluate_recall(outcome_conditions(outcomes), estimates, truth)
    np.testing.assert_allclose(report.conditions["night"].methods["rpnp"].recall, [200 / 3] * 3)
    np.testing.assert_allclose(report.conditions["sun"].methods["fpnp"].recall, [100 / 3] * 3)
    # submissions list only localized queries; the per-query table lists all of them
    write_submission(tmp_path / "sub.txt", estimates["fpnp"])
    assert set(read_submission(tmp_path / "sub.txt")) == {"rear/0.jpg", "rear/2.jpg", "rear/10.jpg"}
    rows = list(csv.DictReader(write_outcomes_csv(tmp_path / "q.csv", outcomes, report).open()))
    assert [r["name"] for r in rows] == [q.name for q in queries]
    assert rows[1]["success"] == "0" and rows[1]["rpnp_dt_m"] == "inf"
    assert [r["references_verified"] for r in rows] == ["1", "0", "1", "1", "0", "0"]
    assert float(rows[0]["fpnp_dt_m"]) == pytest.approx(0.01 * math.sqrt(3))


def test_local_validation_excludes_the_query_itself():
    rng = np.random.default_rng(4)
    refs = [ReferenceImage(f"overcast-reference/rear/{i}.jpg", Path(f"x/{i}.jpg"), CAMERA, random_pose(rng))
            for i in (0, 2)]
    queries, truth = reference_queries(Dataset("d", Path("/nonexistent"), refs, np.zeros((0, 3)), []))
    assert [q.condition for q in queries] == ["overcast-reference"] * 2
    assert truth["overcast-reference/rear/2.jpg"] is refs[1].pose
    localizer = FakeLocalizer(truth)
    outcomes = evaluate_queries(localizer, queries, fake_reader(queries), exclude_self=True, progress=False)
    assert [kw for _, kw in localizer.calls] == [{"exclude_reference": q.name} for q in queries]
    assert all(o.success for o in outcomes)


def test_select_queries_per_condition_limit_and_unknown_condition():
    queries = fake_queries(5)
    picked = select_queries(queries, limit=2)
    assert [q.name for q in picked] == ["rear/0.jpg", "rear/4.jpg", "rear/10.jpg", "rear/14.jpg"]
    assert [q.condition for q in select_queries(queries, ["sun"])] == ["sun"] * 5
    with pytest.raises(DatasetError, match="dusk.*night, sun"):
        select_queries(queries, ["dusk"])
