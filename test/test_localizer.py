"""The full localizer on a small rendered scene (random network: no weights can be downloaded)."""
import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from ros2_s2dhm.datasets.synthetic.generate import default_camera, street_pose
from ros2_s2dhm.datasets.synthetic.render import render_view
from ros2_s2dhm.datasets.synthetic.scene import make_scene
from ros2_s2dhm.compact_descriptors import project_map
from ros2_s2dhm.errors import InputImageError
from ros2_s2dhm.features.pca import PCA
from ros2_s2dhm.geometry import pose_error
from ros2_s2dhm.localizer import STAGES, Localizer, LocalizerConfig
from ros2_s2dhm.matching import MatcherConfig
from ros2_s2dhm.pnp import PnPConfig
from ros2_s2dhm.point_selection import select_spread
from ros2_s2dhm.reference_map import ReferenceMap

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _config():
    # A random VGG-16 is too smooth for S2DHM's ratio test (no match survives it), and 12 px
    # is S2DHM's threshold for 1024 px images: these 128 px images take 3 px.
    return LocalizerConfig(top_k=3, matcher=MatcherConfig(use_ratio_test=False),
                           pnp=PnPConfig(reprojection_error_px=3.0))


@pytest.fixture(scope="module")
def scene(tiny_synthetic):
    return make_scene(0, length=14.0), default_camera(128, 96)


@pytest.mark.parametrize("device", DEVICES)
def test_recovers_a_reference_pose_precisely(tiny_map_dir, random_network, scene, device):
    net, info = random_network
    world, camera = scene
    loc = Localizer(net, ReferenceMap.load(tiny_map_dir, info.sha256), _config(), device)
    truth = street_pose(4.0)  # the pose of a reference image
    image, _ = render_view(world, truth, camera)
    res = loc.localize(image, camera)
    assert res.success, res.failure_reason
    dt_r, dr_r = pose_error(res.pose_rpnp, truth)
    dt_f, dr_f = pose_error(res.pose_fpnp, truth)
    assert dt_r < 0.5 and dr_r < 2.0
    assert dt_f < 0.06 and dr_f < 0.4, (dt_f, dr_f)  # Feature-PnP removes the 4 px cell quantisation
    assert res.pose is res.pose_fpnp and res.weights_random is False
    assert set(res.timings_ms) == set(STAGES)
    assert res.num_inliers >= 12 and len(res.inlier_keypoints) == res.num_inliers
    assert np.all(np.linalg.eigvalsh(res.covariance) > 0)


def test_localizes_between_references(tiny_map_dir, random_network, scene):
    net, info = random_network
    world, camera = scene
    loc = Localizer(net, ReferenceMap.load(tiny_map_dir, info.sha256), _config())
    truth = street_pose(9.3, y=-1.2, yaw_deg=-4)
    res = loc.localize(render_view(world, truth, camera)[0], camera)
    assert res.success, res.failure_reason
    dt, dr = pose_error(res.pose, truth)
    assert dt < 1.0 and dr < 3.0, (dt, dr)
    centres = np.array([ReferenceMap.load(tiny_map_dir).pose(i).center[0] for i in res.reference_indices[:1]])
    assert abs(centres[0] - 9.3) < 3.0  # retrieval picked a nearby reference


def test_failure_has_reason_and_no_pose(tiny_map_dir, random_network, scene):
    net, info = random_network
    world, camera = scene
    ref_map = ReferenceMap.load(tiny_map_dir, info.sha256)
    loc = Localizer(net, ref_map, _config())
    image = render_view(world, street_pose(5.0), camera)[0]
    res = loc.localize(image, camera, prior_center=[500.0, 0, 0], prior_radius_m=5.0)
    assert not res.success and res.pose is None and res.pose_rpnp is None
    assert "no reference" in res.failure_reason
    # Textureless input: the ratio test leaves few matches and those collapse onto a few
    # pixels, so no reference verifies and there is no pose, not even a candidate.
    strict = Localizer(net, ref_map, LocalizerConfig(top_k=3))
    res = strict.localize(np.full_like(image, 30), camera)
    assert not res.success and res.pose is None and res.candidate_pose is None
    assert "too few" in res.failure_reason or "degenerate" in res.failure_reason


def test_time_budget_stops_the_cascade(tiny_map_dir, random_network, scene):
    net, info = random_network
    world, camera = scene
    ref_map = ReferenceMap.load(tiny_map_dir, info.sha256)
    image = np.full((camera.height, camera.width, 3), 30, np.uint8)  # verifies nowhere
    config = LocalizerConfig(top_k=6, cascade_batch=2, retrieval_extra=0)
    unbounded = Localizer(net, ref_map, config).localize(image, camera)
    assert len(unbounded.reference_names) == 6 and not unbounded.budget_exhausted
    bounded = Localizer(net, ref_map, dataclasses.replace(config, time_budget_ms=1e-3))
    res = bounded.localize(image, camera)
    assert not res.success and res.budget_exhausted
    assert len(res.reference_names) == 2  # one batch, then the budget was spent
    assert "time budget" in res.failure_reason
    # a per-query budget (the node's adaptive one) replaces the config's for that query
    unbounded_localizer = Localizer(net, ref_map, config)
    qf = unbounded_localizer.features(image, camera)
    cut = unbounded_localizer.localize_features(qf, time_budget_ms=1e-3)
    assert cut.budget_exhausted and len(cut.reference_names) == 2
    lifted = bounded.localize_features(bounded.features(image, camera), time_budget_ms=0.0)
    assert not lifted.budget_exhausted and len(lifted.reference_names) == 6


def test_bad_query_input_is_named(tiny_map_dir, random_network, scene):
    net, info = random_network
    _, camera = scene
    loc = Localizer(net, ReferenceMap.load(tiny_map_dir, info.sha256), _config())
    with pytest.raises(InputImageError, match="camera is 128x96"):
        loc.localize(np.zeros((50, 60, 3), np.uint8), camera)
    with pytest.raises(InputImageError, match="uint8"):
        loc.localize(np.zeros((96, 128, 3), np.float32), camera)


def test_refinement_points_spread_and_weighted_as_configured(tiny_map_dir, random_network, scene):
    """Feature-PnP gets at most refine_max_points inliers: with grid 1 the best-scoring ones,
    with a grid more image cells; refine_score_weights passes the match scores as weights."""
    net, info = random_network
    world, camera = scene
    image, _ = render_view(world, street_pose(4.0), camera)
    seen = {}

    class Spy:
        def refine(self, pose, points3d, ref, fmap, fmap_camera, weights=None):
            seen["n"], seen["weights"] = len(points3d), weights
            raise RuntimeError("stop")  # the inputs are what is checked here

    cells = {}
    for grid, weights in ((1, False), (2, True)):  # grid 2: 5 points from each quadrant
        config = dataclasses.replace(_config(), refine_max_points=20, refine_spread_grid=grid,
                                     refine_score_weights=weights)
        loc = Localizer(net, ReferenceMap.load(tiny_map_dir, info.sha256), config)
        qf = loc.features(image, camera)
        hyps = loc.retrieve(qf, k=1)
        loc.match(qf, hyps)
        loc.verify(qf, hyps)
        decision = loc.decide(qf, hyps)
        assert decision is not None and decision.inliers.sum() > 20
        loc.refiner = Spy()
        with pytest.raises(RuntimeError, match="stop"):
            loc.refine(qf, decision)
        assert seen["n"] == 20
        inl = np.flatnonzero(decision.inliers)
        scores = decision.match_scores[inl]
        if weights:
            assert seen["weights"] is not None and len(seen["weights"]) == 20
            assert float(seen["weights"].min()) >= 0.0
        else:
            assert seen["weights"] is None
        keep = select_spread(decision.uv[inl], scores, camera.width, camera.height, 20, grid)
        if grid == 1:
            assert np.array_equal(np.sort(scores[keep]), np.sort(scores)[-20:])
        half = np.clip((decision.uv[inl] + 0.5) * 2 / [camera.width, camera.height], 0, 1)
        quadrant = (half[:, 1].astype(int) * 2 + half[:, 0].astype(int))  # select_spread's cells
        cells[grid] = np.bincount(quadrant[keep], minlength=4)
        available = np.bincount(quadrant, minlength=4)
    # round-robin: each quadrant gives min(5, its inliers), the rest go to the others
    assert available.min() >= 5, available
    assert cells[2].tolist() == [5, 5, 5, 5], cells
    assert cells[1].tolist() != [5, 5, 5, 5], cells  # the best scores are not spread evenly


def test_refinement_runs_the_matching_space_then_the_detail_level(tiny_map_dir, random_network, scene):
    """Feature-PnP's second pass starts where the first ended, on the stride-2 detail map of the
    query and the map's detail descriptors of the same inliers; without them it runs once."""
    net, info = random_network
    world, camera = scene
    image, _ = render_view(world, street_pose(4.0), camera)
    ref_map = ReferenceMap.load(tiny_map_dir, info.sha256)
    assert ref_map.has_detail
    calls = []

    class Recorder:
        def __init__(self, real):
            self.real = real

        def refine(self, pose, points3d, ref, fmap, fmap_camera, weights=None):
            result = self.real.refine(pose, points3d, ref, fmap, fmap_camera, weights)
            calls.append((pose, points3d.clone(), ref.clone(), fmap, fmap_camera, result))
            return result

    def run(reference_map, **options):
        calls.clear()
        loc = Localizer(net, reference_map, dataclasses.replace(_config(), **options))
        qf = loc.features(image, camera)
        hyps = loc.retrieve(qf)
        loc.match(qf, hyps)
        loc.verify(qf, hyps)
        decision = loc.decide(qf, hyps)
        assert decision is not None
        loc.refiner = Recorder(loc.refiner)
        return qf, decision, loc.refine(qf, decision)

    qf, decision, (result, reason) = run(ref_map)
    assert len(calls) == 2 and reason.startswith("matching ") and ", detail " in reason
    (pose1, pts1, ref1, fmap1, cam1, res1), (pose2, pts2, ref2, fmap2, cam2, res2) = calls
    assert fmap1 is qf.fine and result is res2
    # the query's detail level, projected by the map's detail PCA (stride 2: 64x48 vs 32x24)
    detail_pca = PCA.from_state_dict(ref_map.detail_projection)
    assert torch.equal(fmap2, project_map(detail_pca, qf.detail))
    assert fmap2.shape == (ref_map.detail_dim, qf.fine.shape[1] * 2, qf.fine.shape[2] * 2)
    assert cam2.K[0, 0] == pytest.approx(2 * cam1.K[0, 0])
    assert pose1 is decision.pose and pose2 is res1.pose and torch.equal(pts1, pts2)
    # the same inliers' detail descriptors, read from their references' map rows
    inl = np.flatnonzero(decision.inliers)
    inl = inl[select_spread(decision.uv[inl], decision.match_scores[inl], camera.width, camera.height,
                            1024, 16)]
    expected = np.stack([ref_map.detail_descriptors[r][k].astype(np.float32)
                         * np.float32(ref_map.detail_scales[r][k]) for r, k in decision.sources[inl]])
    np.testing.assert_allclose(ref2.cpu().numpy(), expected, rtol=1e-6)
    assert ref1.shape[1] == ref_map.descriptor_dim and ref2.shape[1] == ref_map.detail_dim
    # off, or a map built before the detail level: one pass in the matching space
    for reference_map, options in ((ref_map, {"refine_detail": False}),
                                   (dataclasses.replace(ref_map, detail_descriptors=None,
                                                        detail_scales=None,
                                                        detail_projection=None), {})):
        qf, _, (result, reason) = run(reference_map, **options)
        assert len(calls) == 1 and calls[0][3] is qf.fine and result is calls[0][5]
        assert reason == result.reason


def test_retrieval_ranks_by_the_maps_hub_term_and_computes_it_for_older_maps(tiny_map_dir,
                                                                             random_network, scene):
    """retrieval_hubness: the localizer's index carries the map's neighbour similarities (CSLS);
    off, plain cosine; a map built before them gets them computed when opened."""
    from ros2_s2dhm.retrieval import neighbour_similarity

    net, info = random_network
    world, camera = scene
    ref_map = ReferenceMap.load(tiny_map_dir, info.sha256)
    assert ref_map.global_neighbour_similarity is not None and ref_map.pca["whiten"]
    loc = Localizer(net, ref_map, _config())
    qf = loc.features(render_view(world, street_pose(5.0), camera)[0], camera)
    cos = torch.from_numpy(np.asarray(ref_map.global_descriptors)) @ qf.global_descriptor
    csls = 2 * cos - torch.from_numpy(ref_map.global_neighbour_similarity)
    ranked = loc.retrieve(qf, k=len(ref_map))
    assert [h.reference for h in ranked] == torch.argsort(csls, descending=True).tolist()
    assert np.allclose([h.retrieval_score for h in ranked], np.sort(csls.numpy())[::-1], atol=1e-5)
    loc.configure(dataclasses.replace(_config(), retrieval_hubness=False))
    plain = loc.retrieve(qf, k=len(ref_map))
    assert np.allclose([h.retrieval_score for h in plain], np.sort(cos.numpy())[::-1], atol=1e-5)
    older = dataclasses.replace(ref_map, global_neighbour_similarity=None)
    recomputed = Localizer(net, older, _config()).index.penalty.numpy()
    k = ref_map.config["hub_neighbours"]
    assert np.allclose(recomputed, neighbour_similarity(ref_map.global_descriptors, k), atol=1e-6)


def test_small_op_stages_run_on_small_op_threads(tiny_map_dir, random_network, scene,
                                                           monkeypatch):
    """On the CPU verification and refinement run on ``small_op_threads`` torch threads (their
    small ops lose to thread synchronisation, most on a shared CPU) and torch's setting is
    restored after; 0 leaves torch's setting alone."""
    from ros2_s2dhm.localizer import cpu_threads

    net, info = random_network
    world, camera = scene
    ref_map = ReferenceMap.load(tiny_map_dir, info.sha256)
    image = np.full((camera.height, camera.width, 3), 30, np.uint8)
    before = torch.get_num_threads()
    seen = []
    for n in (1, 0):
        localizer = Localizer(net, ref_map, LocalizerConfig(top_k=2, small_op_threads=n))
        original = localizer.verify
        monkeypatch.setattr(localizer, "verify", lambda qf, hyps, original=original: (
            seen.append(torch.get_num_threads()), original(qf, hyps))[1])
        localizer.localize(image, camera)
        assert torch.get_num_threads() == before
    assert seen[0] == 1 and seen[-1] == before
    with cpu_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before


def test_references_verified_in_parallel_give_what_one_after_another_gives(tiny_map_dir,
                                                                         random_network, scene):
    """verify_threads: the RANSAC-PnP of a batch's references runs in a thread pool; every
    hypothesis' pose, inliers, score and reason are those of the sequential run."""
    net, info = random_network
    world, camera = scene
    image, _ = render_view(world, street_pose(6.0), camera)
    ref_map = ReferenceMap.load(tiny_map_dir, info.sha256)
    runs = []
    for threads in (1, 3):
        loc = Localizer(net, ref_map, dataclasses.replace(_config(), top_k=6, verify_threads=threads))
        qf = loc.features(image, camera)
        hyps = loc.retrieve(qf)[:6]
        loc.match(qf, hyps)
        loc.verify(qf, hyps)
        runs.append(hyps)
    assert sum(h.verified for h in runs[0]) >= 2 and isinstance(loc._pool[0], ThreadPoolExecutor)
    for a, b in zip(*runs):
        assert (a.reference, a.reason, a.score) == (b.reference, b.reason, b.score)
        assert np.array_equal(a.inliers, b.inliers)
        assert (a.pose is None and b.pose is None) or (np.array_equal(a.pose.R, b.pose.R)
                                                       and np.array_equal(a.pose.t, b.pose.t))
