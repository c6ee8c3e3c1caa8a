"""Verification per reference, confidence and the cascade on a rendered scene."""
import numpy as np
import pytest

from ros2_s2dhm.datasets.synthetic.generate import default_camera, street_pose
from ros2_s2dhm.datasets.synthetic.render import render_view
from ros2_s2dhm.datasets.synthetic.scene import make_scene
from ros2_s2dhm.geometry import Pose, pose_error
from ros2_s2dhm.localizer import Localizer, LocalizerConfig
from ros2_s2dhm.matching import MatcherConfig
from ros2_s2dhm.pnp import PnPConfig
from ros2_s2dhm.reference_map import ReferenceMap
from ros2_s2dhm.verification import (Hypothesis, VerificationConfig, group_confidence,
                                     hypothesis_score, inlier_coverage, judge)


@pytest.fixture(scope="module")
def setup(tiny_map_dir, random_network):
    net, info = random_network
    ref_map = ReferenceMap.load(tiny_map_dir, info.sha256)
    config = LocalizerConfig(top_k=3, matcher=MatcherConfig(use_ratio_test=False),
                             pnp=PnPConfig(reprojection_error_px=3.0))
    camera = default_camera(128, 96)
    truth = street_pose(4.0)
    image, _ = render_view(make_scene(0, length=14.0), truth, camera)
    loc = Localizer(net, ref_map, config)
    return loc, loc.features(image, camera), truth


def _hypotheses(loc, qf, names):
    hyps = [h for h in loc.retrieve(qf, k=len(loc.map)) if h.name in names]
    return sorted(hyps, key=lambda h: names.index(h.name))


def test_confidence_orders_the_right_reference_above_an_injected_wrong_one(setup):
    loc, qf, truth = setup
    centers = loc.map.centers
    right = loc.map.names[int(np.argmin(np.linalg.norm(centers - truth.center, axis=1)))]
    wrong = loc.map.names[int(np.argmax(np.linalg.norm(centers - truth.center, axis=1)))]
    hyps = _hypotheses(loc, qf, [wrong, right])  # the wrong one "retrieved" first, like a hub
    loc.match(qf, hyps)
    loc.verify(qf, hyps)
    by_name = {h.name: h for h in hyps}
    assert by_name[right].verified and by_name[right].score > 0.5
    assert by_name[wrong].score < by_name[right].score
    decision = loc.decide(qf, hyps)
    assert decision.group[0].name == right  # the hub cannot win verification
    dt, dr = pose_error(decision.pose, truth)
    assert dt < 0.5 and dr < 2.0
    alone = loc.decide(qf, [by_name[wrong]])
    assert alone is None or alone.confidence < decision.confidence


def test_a_rival_with_as_many_inliers_makes_the_pose_ambiguous():
    cfg = VerificationConfig()
    pose_a, pose_b = Pose.exp(np.zeros(6)), Pose.exp(np.array([0, 0, 0, 30.0, 0, 0]))

    def hyp(pose, n, m=400):
        h = Hypothesis(0, "x", 0, 1.0, np.zeros((m, 2)), np.zeros((m, 3)), np.zeros(m), None)
        h.pose, h.inliers, h.coverage = pose, np.arange(m) < n, 0.6
        h.score = hypothesis_score(n, m, 0.6, 12, cfg)
        return h

    best, rival = hyp(pose_a, 300), hyp(pose_b, 290)
    assert best.score > 0.9
    assert group_confidence([best], [best, rival], cfg) < 0.1  # margin 1.03
    far_behind = hyp(pose_b, 100)
    assert group_confidence([best], [best, far_behind], cfg) == pytest.approx(best.score)


def test_score_terms_fall_with_weak_evidence():
    cfg = VerificationConfig()
    strong = hypothesis_score(800, 2000, 0.6, 12, cfg)
    assert strong > 0.95
    assert hypothesis_score(160, 2000, 0.6, 12, cfg) == 0.0  # inlier ratio 0.08: background
    assert hypothesis_score(800, 2000, 0.1, 12, cfg) == 0.0   # inliers on a few image cells
    assert hypothesis_score(12, 20, 0.6, 12, cfg) == 0.0      # the PnP minimum is no evidence
    assert inlier_coverage(np.array([[0.0, 0.0], [1.0, 1.0], [127.0, 95.0]]), 128, 96, 8) == 2 / 64


def test_a_pose_facing_away_from_its_reference_is_rejected():
    cfg = VerificationConfig()
    m = 100
    h = Hypothesis(0, "ref", 0, 1.0, np.random.default_rng(0).uniform(0, 128, (m, 2)),
                   np.zeros((m, 3)), np.zeros(m), None)
    reference = Pose.exp(np.zeros(6))
    h.pose = Pose.exp(np.array([0.0, np.pi, 0.0, 0.0, 0.0, 0.0]))  # turned around, same place
    h.inliers = np.ones(m, bool)
    judge(h, reference, 12, (128, 96), cfg)
    assert not h.verified and "looks 180 deg away" in h.reason and h.score == 0.0


def test_cascade_stops_early_when_sure_and_the_prior_retry_reuses_features(setup):
    loc, qf, truth = setup
    sure = loc.localize_features(qf)
    assert sure.success and sure.confidence >= loc.config.min_confidence
    assert len(sure.reference_names) <= loc.config.top_k
    nowhere = loc.localize_features(qf, prior_center=[500.0, 0, 0], prior_radius_m=1.0)
    assert not nowhere.success and nowhere.candidate_pose is None
    again = loc.localize_features(qf)  # same features, same answer
    assert again.success and pose_error(again.pose, sure.pose)[0] < 1e-9


def test_cascade_looks_beyond_top_k_when_nothing_verifies(shipped_map, monkeypatch):
    """Shipped weights, S2DHM's ratio test on: with the right place ranked last by retrieval,
    the far references do not verify, and the cascade finds the place only when allowed to look
    past the top-k."""
    import dataclasses

    from ros2_s2dhm.features.checkpoints import load_network
    from ros2_s2dhm.runtime import resolve_weights

    map_dir, _ = shipped_map
    net, info = load_network(resolve_weights("default"))
    loc = Localizer(net, ReferenceMap.load(map_dir, info.sha256), LocalizerConfig(top_k=2))
    camera, truth = default_camera(128, 96), street_pose(4.0)
    qf = loc.features(render_view(make_scene(0, length=14.0), truth, camera)[0], camera)
    far_first = sorted(range(len(loc.map)), key=lambda i: -np.linalg.norm(loc.map.centers[i] - truth.center))
    ranked = _hypotheses(loc, qf, [loc.map.names[i] for i in far_first])
    monkeypatch.setattr(loc, "retrieve", lambda qf, *a, **k: [  # k = top_k + retrieval_extra
        dataclasses.replace(h, rank=r) for r, h in enumerate(ranked)][:loc.config.top_k
                                                                      + loc.config.retrieval_extra])
    top_k = loc.config.top_k
    for extra, found in ((0, False), (len(ranked), True)):
        loc.config = dataclasses.replace(loc.config, retrieval_extra=extra)
        res = loc.localize_features(qf)
        # in retrieval order, and past the top-k only when allowed (it stops at a sure pose,
        # which a reference near the place gives before the nearest one is reached)
        assert res.reference_names == [h.name for h in ranked[:len(res.reference_names)]]
        assert (len(res.reference_names) > top_k) == found
        assert res.success == found, res.failure_reason
        if found:
            assert pose_error(res.pose, truth)[0] < 0.25


def test_the_search_past_top_k_and_the_gate_are_apart(setup, monkeypatch):
    """A confidence between min_confidence and retrieval_extra_confidence keeps the search
    going past the top-k; the gate alone decides whether the best pose found is returned."""
    import dataclasses

    loc, qf, _ = setup
    extra = len(loc.map) - loc.config.top_k
    assert extra > 0
    # no matching and no RANSAC; every set of references verified so far scores 0.3
    monkeypatch.setattr(loc, "match", lambda qf, batch: None)
    monkeypatch.setattr(loc, "verify", lambda qf, batch: None)
    monkeypatch.setattr(loc, "_confidence", lambda done: 0.3)
    base = dataclasses.replace(loc.config, cascade_batch=1, retrieval_extra=extra,
                               min_confidence=0.25)
    verified = {}
    for extra_confidence in (0.5, 0.25):  # through monkeypatch: the fixture's loc is shared
        monkeypatch.setattr(loc, "config", dataclasses.replace(
            base, retrieval_extra_confidence=extra_confidence))
        verified[extra_confidence] = len(loc.localize_features(qf).reference_names)
    assert verified[0.5] == base.top_k + extra  # 0.3 < 0.5: it looked past the top-k
    assert verified[0.25] == base.top_k  # 0.3 reaches 0.25: the top-k was enough
    with pytest.raises(ValueError, match="retrieval_extra_confidence"):
        LocalizerConfig(retrieval_extra_confidence=1.5)
