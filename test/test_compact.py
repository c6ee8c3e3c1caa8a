"""Compact descriptors: int8 quantisation, the PCA matching space, coarse-to-fine matching."""
import numpy as np
import pytest
import torch

from ros2_s2dhm.compact_descriptors import (dequantize_int8, project_map, project_taps,
                                            quantize_int8, upsampled_square_norm)
from ros2_s2dhm.features.pca import PCA
from ros2_s2dhm.features.preprocess import prepare_image
from ros2_s2dhm.matching import MatcherConfig, match_sparse_to_dense, pool_map


def test_int8_round_trip_error_is_bounded_by_half_a_step():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(1000, 128, generator=g), dim=1)
    x[0] = 0.0  # an all-zero vector stays zero
    q, scale = quantize_int8(x)
    assert q.dtype == torch.int8 and scale.dtype == torch.float16 and q.abs().max() <= 127
    back = dequantize_int8(q, scale)
    assert torch.all((back - x).abs() <= scale.float()[:, None] / 2 + 1e-6)
    assert torch.equal(back[0], torch.zeros(128))
    # correlations, what matching uses, move by less than 1 %
    y = torch.nn.functional.normalize(torch.randn(50, 128, generator=g), dim=1)
    assert (back[1:] @ y.T - x[1:] @ y.T).abs().max() < 0.01


def test_projection_keeps_the_ratio_test_decisions():
    """A distinct descriptor passes and an ambiguous one fails in the projected space too."""
    g = torch.Generator().manual_seed(1)
    c, h, w = 256, 24, 32
    base = torch.randn(c, 1, 1, generator=g)
    fmap = torch.nn.functional.normalize(base + 0.05 * torch.randn(c, h, w, generator=g), dim=0)
    fmap[:, 10, 12] = torch.nn.functional.normalize(torch.randn(c, generator=g), dim=0)  # distinct cell
    projection = PCA.fit(fmap.reshape(c, -1).T.numpy(), dim=32)
    small = project_map(projection, fmap)
    assert small.shape == (32, h, w)
    assert torch.allclose(small.norm(dim=0), torch.ones(h, w), atol=1e-5)
    # distinct; ambiguous: the common appearance with noise of its own (another image's)
    ambiguous = torch.nn.functional.normalize(base[:, 0, 0] + 0.05 * torch.randn(c, generator=g), dim=0)
    desc = torch.stack([fmap[:, 10, 12], ambiguous])
    q, s = quantize_int8(projection.transform(desc))
    projected = dequantize_int8(q, s)[None]
    for query, ref in ((fmap, desc[None]), (small, projected)):
        m = match_sparse_to_dense(query, ref, torch.ones(1, 2, dtype=torch.bool),
                                  MatcherConfig(coarse_factor=1))
        assert m.valid.tolist() == [[True, False]]
        assert m.query_uv[0, 0].round().tolist() == [12.0, 10.0]


@pytest.mark.parametrize("factor,shape,size", [(1, (3, 7, 9), (7, 9)), (2, (5, 4, 6), (9, 13)),
                                               (4, (6, 3, 5), (13, 21)), (2, (2, 1, 1), (3, 2))])
def test_upsampled_square_norm_equals_the_norm_of_the_upsampled_map(factor, shape, size):
    """Neighbour inner products give the squared norm of the bilinear upsampling, edge rows
    and the replicated padding included."""
    from ros2_s2dhm.features.backbone import upsample_aligned

    x = torch.randn(shape, generator=torch.Generator().manual_seed(factor))
    direct = upsample_aligned(x[None], factor, size)[0].square().sum(0)
    torch.testing.assert_close(upsampled_square_norm(x, factor, size), direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("whiten", [False, True])
def test_projecting_the_taps_equals_projecting_the_hypercolumn(whiten):
    """The query's fused projection is the map's: project_map of the normalised hypercolumn."""
    from ros2_s2dhm.features.backbone import S2DHMNetwork, hypercolumn_from_taps

    net = S2DHMNetwork().eval()
    with torch.no_grad():
        taps = net.taps(torch.randn(1, 3, 100, 140, generator=torch.Generator().manual_seed(0)))
        hyper = hypercolumn_from_taps(taps)[0]
    samples = hyper.reshape(hyper.shape[0], -1).T[::3]
    projection = PCA.fit(samples, dim=32, whiten=whiten).rounded_to_half()
    expected = project_map(projection, hyper)
    fused = project_taps(projection, taps)
    assert fused.shape == expected.shape == (32, 25, 35)
    torch.testing.assert_close(fused, expected, rtol=0, atol=2e-5)
    with pytest.raises(ValueError, match="4 taps have 1792 channels"):
        project_taps(projection, taps[1:])


def test_pool_map_keeps_the_stride_convention():
    fmap = torch.arange(2 * 4 * 6, dtype=torch.float32).reshape(2, 4, 6) + 1
    coarse = pool_map(fmap, 2)
    assert coarse.shape == (2, 2, 3)
    expected = fmap[:, 2:4, 2:4].mean(dim=(1, 2))
    assert torch.allclose(coarse[:, 1, 1], torch.nn.functional.normalize(expected, dim=0))


def test_coarse_to_fine_finds_the_exhaustive_match_on_a_rendered_scene(tiny_map_dir, random_network):
    from ros2_s2dhm.datasets.synthetic.generate import default_camera, street_pose
    from ros2_s2dhm.datasets.synthetic.render import render_view
    from ros2_s2dhm.datasets.synthetic.scene import make_scene
    from ros2_s2dhm.reference_map import ReferenceMap

    net, info = random_network
    ref_map = ReferenceMap.load(tiny_map_dir, info.sha256)
    projection = PCA.from_state_dict(ref_map.projection)
    camera = default_camera(128, 96)  # the tiny map's size
    image, _ = render_view(make_scene(0, length=14.0), street_pose(4.3, yaw_deg=2), camera)
    with torch.no_grad():
        fine = project_map(projection, net(prepare_image(image, 128)[0]).hypercolumn[0])
    index = int(np.argmin(np.abs(ref_map.centers[:, 0] - 4.0)))
    desc = dequantize_int8(torch.from_numpy(ref_map.descriptors[[index]]),
                           torch.from_numpy(ref_map.descriptor_scales[[index]]))
    valid = torch.from_numpy(ref_map.valid[[index]])
    exhaustive = match_sparse_to_dense(fine, desc, valid, MatcherConfig(coarse_factor=1, use_ratio_test=False))
    for factor, agree in ((2, 0.9), (4, 0.75)):
        c2f = match_sparse_to_dense(fine, desc, valid, MatcherConfig(coarse_factor=factor, use_ratio_test=False))
        keep = valid[0]
        same = (c2f.query_uv[0][keep] - exhaustive.query_uv[0][keep]).norm(dim=1) < 0.5
        assert same.float().mean() >= agree, (factor, same.float().mean())
        # coarse-to-fine never finds a better cell than the exhaustive search
        assert torch.all(c2f.scores[0][keep] <= exhaustive.scores[0][keep] + 1e-4)


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_config_rejects_bad_values(factor):
    MatcherConfig(coarse_factor=factor)
    with pytest.raises(ValueError, match="coarse_factor"):
        MatcherConfig(coarse_factor=0)
    with pytest.raises(ValueError, match="ratio"):
        MatcherConfig(ratio=1.5)


def test_map_stores_the_projected_detail_level_at_its_keypoints(tiny_synthetic, tiny_map_dir, random_network):
    from ros2_s2dhm.datasets import load_dataset, read_image
    from ros2_s2dhm.features.backbone import DETAIL_DIM, DETAIL_STRIDE
    from ros2_s2dhm.geometry.pixels import image_to_feature, scale_pixels
    from ros2_s2dhm.matching import sample_descriptors
    from ros2_s2dhm.reference_map import ReferenceMap

    from ros2_s2dhm.features.pca import PCA
    from ros2_s2dhm.map_builder import MapBuildConfig

    net, info = random_network
    ref_map = ReferenceMap.load(tiny_map_dir, info.sha256)
    assert ref_map.has_detail and ref_map.detail_dim == MapBuildConfig.detail_dim < DETAIL_DIM
    projection = PCA.from_state_dict(ref_map.detail_projection)
    assert projection.input_dim == DETAIL_DIM and projection.output_dim == ref_map.detail_dim
    index = 3
    reference = {r.name: r for r in load_dataset(tiny_synthetic.root).references}[ref_map.names[index]]
    tensor, scale = prepare_image(read_image(reference.path), ref_map.image_size)
    with torch.no_grad():
        detail = net(tensor).detail[0]
    valid = ref_map.valid[index]
    pixels = scale_pixels(torch.from_numpy(ref_map.keypoints[index][valid]).double(),
                          torch.tensor(scale).double())
    expected = projection.transform(
        sample_descriptors(detail, image_to_feature(pixels, DETAIL_STRIDE).float()))
    stored = dequantize_int8(torch.from_numpy(ref_map.detail_descriptors[index][valid]),
                             torch.from_numpy(ref_map.detail_scales[index][valid]))
    scales = torch.from_numpy(ref_map.detail_scales[index][valid]).float()
    assert torch.all((stored - expected).abs() <= scales[:, None] * 0.51 + 1e-6)
    assert float(torch.nn.functional.cosine_similarity(stored, expected).min()) > 0.999
