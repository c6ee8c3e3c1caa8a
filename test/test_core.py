"""Retrieval, sparse-to-dense matching, RANSAC-PnP and keypoint selection."""
import numpy as np
import pytest
import torch

from ros2_s2dhm.geometry import Camera, Pose, pose_error

from ros2_s2dhm.matching import MatcherConfig, match_sparse_to_dense, sample_descriptors
from ros2_s2dhm.pnp import PnPConfig, ransac_pnp
from ros2_s2dhm.retrieval import RetrievalIndex


def _random_map(c=32, h=12, w=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    fmap = torch.nn.functional.normalize(torch.randn(c, h, w, generator=g), dim=0)
    return fmap


def test_sample_descriptors_exact_at_cells_and_bilinear_between():
    fmap = _random_map()
    uv = torch.tensor([[3.0, 5.0], [0.0, 0.0], [15.0, 11.0]])
    out = sample_descriptors(fmap, uv)
    for (u, v), d in zip(uv.long().tolist(), out):
        assert torch.allclose(d, fmap[:, v, u], atol=1e-6)
    mid = sample_descriptors(fmap, torch.tensor([[3.5, 5.0]]))[0]
    assert torch.allclose(mid, 0.5 * (fmap[:, 5, 3] + fmap[:, 5, 4]), atol=1e-6)


def test_matching_finds_the_cell_a_descriptor_came_from():
    fmap = _random_map()
    cells = torch.tensor([[2, 3], [10, 7], [15, 0], [0, 11]])
    desc = fmap[:, cells[:, 1], cells[:, 0]].T[None]  # [1,N,C]
    m = match_sparse_to_dense(fmap, desc, torch.ones(1, 4, dtype=torch.bool),
                              MatcherConfig(subcell=False, coarse_factor=1))
    assert torch.equal(m.query_uv[0].long(), cells)
    assert m.valid.all()  # random features: the best is far above the k-th best
    assert torch.allclose(m.scores, torch.ones_like(m.scores), atol=1e-5)


def test_ratio_test_rejects_ambiguous_and_keeps_distinct():
    c, h, w = 8, 10, 10
    fmap = torch.zeros(c, h, w)
    fmap[0] = 1.0  # every cell identical: fully ambiguous
    fmap[:, 4, 6] = torch.nn.functional.one_hot(torch.tensor(1), c).float()  # one distinct cell
    desc = torch.stack([fmap[:, 0, 0], fmap[:, 4, 6]])[None]
    m = match_sparse_to_dense(fmap, desc, torch.ones(1, 2, dtype=torch.bool), MatcherConfig())
    assert m.valid.tolist() == [[False, True]]
    off = match_sparse_to_dense(fmap, desc, torch.ones(1, 2, dtype=torch.bool),
                                MatcherConfig(use_ratio_test=False))
    assert off.valid.all()


def test_padding_mask_and_chunking_agree():
    fmap = _random_map(seed=1)
    desc = torch.nn.functional.normalize(torch.randn(5, 7, 32), dim=-1)
    mask = torch.rand(5, 7) > 0.3
    a = match_sparse_to_dense(fmap, desc, mask, MatcherConfig(max_chunk_elements=1))
    b = match_sparse_to_dense(fmap, desc, mask, MatcherConfig())
    assert torch.equal(a.valid, b.valid) and torch.allclose(a.query_uv, b.query_uv)
    assert not a.valid[~mask].any()


def test_subcell_refinement_recovers_offset_peak():
    h, w = 9, 9
    ys, xs = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    true = torch.tensor([4.3, 3.8])
    score = -((xs - true[0]) ** 2 + (ys - true[1]) ** 2)  # parabolic peak
    fmap = torch.stack([score, torch.ones_like(score)])  # score = <[1,0], f>
    m = match_sparse_to_dense(fmap, torch.tensor([[[1.0, 0.0]]]), torch.ones(1, 1, dtype=torch.bool),
                              MatcherConfig(use_ratio_test=False))
    assert torch.allclose(m.query_uv[0, 0], true, atol=1e-4)


def _scene(n=200, seed=0):
    rng = np.random.default_rng(seed)
    cam = Camera("OPENCV", 320, 240, np.array([260.0, 255.0, 160.0, 118.0, -0.05, 0.01, 0.001, -0.001]))
    pose = Pose.exp(np.array([0.05, -0.1, 0.02, 0.3, -0.2, 1.0]))
    p_cam = np.c_[rng.uniform(-4, 4, n), rng.uniform(-3, 3, n), rng.uniform(4, 15, n)]
    p_world = pose.inverse().transform(p_cam)
    uv = cam.project_np(p_cam)[0]
    return cam, pose, p_world, uv


@pytest.mark.parametrize("backend", ["opencv", "pycolmap", "poselib"])
def test_ransac_pnp_backends_recover_pose_with_outliers(backend):
    cam, pose, p3d, uv = _scene()
    rng = np.random.default_rng(1)
    out = rng.random(len(uv)) < 0.3
    uv = uv.copy()
    uv[out] = rng.uniform([0, 0], [320, 240], (out.sum(), 2))
    res = ransac_pnp(uv, p3d, cam, PnPConfig(backend=backend))
    assert res.success, res.reason
    dt, dr = pose_error(res.pose, pose)
    assert dt < 0.03 and dr < 0.2  # outliers landing within 12 px count as inliers
    assert (res.inliers[~out]).mean() > 0.95 and res.inliers[out].mean() < 0.1


def test_ransac_pnp_fails_with_reason_not_pose():
    cam, _, p3d, uv = _scene(n=8)
    res = ransac_pnp(uv, p3d, cam)
    assert not res.success and res.pose is None and "too few" in res.reason
    rng = np.random.default_rng(2)
    res = ransac_pnp(rng.uniform(0, 300, (100, 2)), rng.uniform(-5, 5, (100, 3)) + [0, 0, 10], cam)
    assert not res.success and res.pose is None


def test_ransac_pnp_non_finite_solver_output_is_a_failure(monkeypatch):
    """A solver whose pose is NaN (Pose refuses it) fails with the reason, never raises."""
    import ros2_s2dhm.pnp as pnp

    def nan_solver(p2d, p3d, camera, config):
        return Pose(np.full((3, 3), np.nan), np.zeros(3)), np.ones(len(p2d), bool)
    monkeypatch.setitem(pnp._SOLVERS, "poselib", nan_solver)
    cam, _, p3d, uv = _scene()
    res = ransac_pnp(uv, p3d, cam, PnPConfig(backend="poselib"))
    assert not res.success and res.pose is None and "unusable pose" in res.reason


def test_retrieval_topk_and_prior_radius():
    desc = torch.nn.functional.normalize(torch.randn(6, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    centers = np.array([[i * 10.0, 0, 0] for i in range(6)])
    index = RetrievalIndex(desc, centers)
    idx, scores = index.search(desc[4], 3)
    assert idx[0] == 4 and len(idx) == 3 and scores[0] >= scores[1] >= scores[2]
    idx, _ = index.search(desc[4], 3, prior_center=[0, 0, 0], prior_radius_m=15)
    assert set(idx.tolist()) <= {0, 1}
    idx, _ = index.search(desc[4], 3, exclude=4)
    assert 4 not in idx
    idx, _ = index.search(desc[4], 3, prior_center=[1e3, 0, 0], prior_radius_m=1)
    assert len(idx) == 0


def test_select_spread_spreads_over_cells():
    from ros2_s2dhm.point_selection import select_spread

    rng = np.random.default_rng(0)
    # 900 long tracks crowded in one corner, 100 short ones spread over the image
    crowd = rng.uniform([0, 0], [10, 10], (900, 2))
    spread = rng.uniform([0, 0], [320, 240], (100, 2))
    kps = np.r_[crowd, spread]
    tracks = np.r_[np.full(900, 50), np.full(100, 2)]
    sel = select_spread(kps, tracks, 320, 240, max_count=200, grid=8)
    assert len(sel) == 200 and len(np.unique(sel)) == 200
    assert (sel >= 900).sum() >= 90  # nearly every spread keypoint survives
    assert len(select_spread(kps[:50], tracks[:50], 320, 240, 200, 8)) == 50


def test_hubness_reduction_demotes_a_hub():
    """A reference near the centre of the reference cloud is the plain top-1 of every query far
    from all references; CSLS against the map's own neighbourhoods gives the places back."""
    from ros2_s2dhm.retrieval import neighbour_similarity

    g = torch.Generator().manual_seed(0)
    n, dim = 12, 128
    places = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    refs = places.clone()
    refs[0] = torch.nn.functional.normalize(places[1:].mean(0), dim=0)  # the hub: like every place
    # night queries: their place under a strong shared change that points towards the hub
    queries = torch.nn.functional.normalize(places[1:] + 1.2 * refs[0]
                                            + 0.05 * torch.randn(n - 1, dim, generator=g), dim=1)
    centers = np.array([[i * 10.0, 0, 0] for i in range(n)])
    plain = RetrievalIndex(refs, centers)
    assert all(plain.search(q, 1)[0][0] == 0 for q in queries)  # the hub takes every query
    hub_term = neighbour_similarity(refs, k=3)
    assert hub_term.shape == (n,) and hub_term.argmax() == 0
    csls = RetrievalIndex(refs, centers, neighbour_similarity=hub_term)
    top1 = np.array([csls.search(q, 1)[0][0] for q in queries])
    assert (top1 == 0).sum() <= 2 and (top1 == np.arange(1, n)).mean() >= 0.8
    # scores are CSLS's, best first; the plain index is unchanged
    idx, scores = csls.search(queries[0], 4)
    expected = 2 * (refs @ queries[0]) - torch.from_numpy(hub_term)
    assert np.allclose(scores, expected[idx].numpy(), atol=1e-6) and np.all(np.diff(scores) <= 0)
    with pytest.raises(ValueError, match="neighbour similarities"):
        RetrievalIndex(refs, centers, neighbour_similarity=hub_term[:-1])


def test_neighbour_similarity_blocks_and_small_maps():
    from ros2_s2dhm.retrieval import neighbour_similarity

    x = torch.nn.functional.normalize(torch.randn(9, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    sims = (x @ x.T).fill_diagonal_(-np.inf)
    expected = sims.topk(2, dim=1).values.mean(1).numpy()
    assert np.allclose(neighbour_similarity(x, 2, block=4), expected, atol=1e-6)
    assert np.allclose(neighbour_similarity(x, 50), (x @ x.T).fill_diagonal_(0).sum(1).numpy() / 8, atol=1e-6)
    assert np.all(neighbour_similarity(x[:1], 5) == 0)


def test_global_index_whitens_and_ranks_as_the_localizer():
    """fit_global_index: whitened PCA of the references (every direction of their spread weighs
    the same), the hub term; rank_references ranks raw query descriptors through it."""
    from ros2_s2dhm.retrieval import fit_global_index, rank_references

    g = torch.Generator().manual_seed(3)
    n, dim = 20, 64
    places = torch.randn(n, dim, generator=g)
    # one direction of large variance (lighting) that says nothing about the place
    light = torch.nn.functional.normalize(torch.randn(dim, generator=g), dim=0)
    refs = places + 6.0 * torch.randn(n, 1, generator=g) * light
    queries = places + 6.0 * torch.randn(n, 1, generator=g) * light + 0.3 * torch.randn(n, dim, generator=g)
    refs, queries = (torch.nn.functional.normalize(x, dim=1).numpy() for x in (refs, queries))
    white = fit_global_index(refs, pca_dim=1024, whiten=True, hub_neighbours=3)
    plain = fit_global_index(refs, pca_dim=1024, whiten=False, hub_neighbours=3)
    assert white.pca.whiten and white.descriptors.shape == (n, n - 1)
    # N - 1 whitened dims: a regular simplex, up to the float16 rounding of the stored
    # components (which moves a projected unit vector by ~5e-4); unwhitened, far from it
    off_diagonal = ~np.eye(n, dtype=bool)
    off = (white.descriptors @ white.descriptors.T)[off_diagonal]
    assert np.allclose(off, off.mean(), atol=1e-3) and np.ptp(white.neighbour_similarity) < 1e-3
    assert np.ptp((plain.descriptors @ plain.descriptors.T)[off_diagonal]) > 0.1
    top1 = {name: rank_references(index, queries, 5)[:, 0] for name, index in
            (("white", white), ("plain", plain))}
    correct = {name: float((t == np.arange(n)).mean()) for name, t in top1.items()}
    assert correct["white"] >= 0.9 and correct["white"] > correct["plain"]
    assert rank_references(white, queries, 50).shape == (n, n)  # k clipped to the map
