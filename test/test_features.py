"""Tests of ros2_s2dhm.features: preprocessing, hypercolumns, NetVLAD, PCA, checkpoints."""
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ros2_s2dhm.errors import CheckpointError, InputImageError
from ros2_s2dhm.features import (
    HYPERCOLUMN_DIM,
    HYPERCOLUMN_LAYERS,
    PCA,
    NetVLAD,
    S2DHMNetwork,
    load_network,
    prepare_image,
    save_network,
    weights_hash,
)
from ros2_s2dhm.features.backbone import (
    DETAIL_DIM,
    DETAIL_LAYER,
    DETAIL_STRIDE,
    TAP_CHANNELS,
    TAP_STRIDES,
    upsample_aligned,
    hypercolumn_from_taps,
)

CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def net():
    return S2DHMNetwork(seed=1).eval()


@pytest.fixture(scope="module")
def images():
    return torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- preprocess

def test_prepare_image_scale_and_normalisation():
    image = np.full((60, 100, 3), 124, np.uint8)
    tensor, scale = prepare_image(image, 64, "cpu")
    assert tensor.shape == (1, 3, 38, 64) and tensor.dtype == torch.float32
    assert scale == pytest.approx((64 / 100, 38 / 60))
    expected = (124 / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    np.testing.assert_allclose(tensor[0, :, 10, 10].numpy(), expected, atol=1e-5)
    up, up_scale = prepare_image(np.zeros((30, 20, 3), np.uint8), 64)
    assert up.shape == (1, 3, 64, 43) and up_scale == pytest.approx((43 / 20, 64 / 30))


@pytest.mark.parametrize("bad", [
    np.zeros((32, 32), np.uint8), np.zeros((32, 32, 4), np.uint8),
    np.zeros((32, 32, 3), np.float32), np.zeros((0, 32, 3), np.uint8), [[1, 2, 3]]])
def test_prepare_image_rejects_bad_arrays(bad):
    with pytest.raises(InputImageError, match="image"):
        prepare_image(bad, 64)


# ----------------------------------------------------------------------------- backbone

def test_hypercolumn_shape_and_unit_norm(net, images):
    with torch.inference_mode():
        out = net(images)
        odd = net.hypercolumn(torch.randn(1, 3, 70, 90))
    assert out.hypercolumn.shape == (1, HYPERCOLUMN_DIM, 16, 24) and HYPERCOLUMN_DIM == 2048
    assert out.hypercolumn.dtype == torch.float32
    torch.testing.assert_close(out.hypercolumn.norm(dim=1), torch.ones(1, 16, 24))
    assert odd.shape == (1, 2048, 17, 22)
    torch.testing.assert_close(odd.norm(dim=1), torch.ones(1, 17, 22))


def test_one_pass_gives_taps_and_conv5_3(net, images):
    calls = []
    hooks = [layer.register_forward_hook(lambda *_, i=i: calls.append(i))
             for i, layer in enumerate(net.encoder)]
    try:
        with torch.inference_mode():
            out = net(images)
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == list(range(29))  # every layer exactly once, conv5_3 last
    with torch.inference_mode():
        taps = [net.encoder[:i](images) for i in HYPERCOLUMN_LAYERS]
        conv5_3 = net.encoder(images)
        assert [t.shape[1] for t in taps] == list(TAP_CHANNELS)
        assert [64 // t.shape[2] for t in taps] == list(TAP_STRIDES)
        torch.testing.assert_close(out.hypercolumn, hypercolumn_from_taps(taps))
        torch.testing.assert_close(out.global_descriptor, net.netvlad(conv5_3))
        torch.testing.assert_close(net.global_descriptor(images), out.global_descriptor)
        for got, ref in zip(net.taps(images), taps):
            torch.testing.assert_close(got, ref)
        # the detail level (Feature-PnP's second pass) comes from the same pass: relu2_2, stride 2
        relu2_2 = net.encoder[:DETAIL_LAYER](images)
        assert out.detail.shape == (1, DETAIL_DIM, 32, 48) and 64 // out.detail.shape[2] == DETAIL_STRIDE
        torch.testing.assert_close(out.detail, F.normalize(relu2_2, dim=1))


def test_hypercolumn_upsampling_keeps_pixel_centres():
    # A stride-8 map linear in its column index c must become linear in the stride-4 index j
    # with c = (j + 0.5) / 2 - 0.5 (interior), edge-replicated up to the stride-4 size.
    coarse = torch.arange(8.0).expand(1, 1, 4, 8)
    up = upsample_aligned(coarse, 2, (9, 17))
    assert up.shape == (1, 1, 9, 17)
    j = torch.arange(1, 15, dtype=torch.float32)
    torch.testing.assert_close(up[0, 0, 0, 1:15], (j + 0.5) / 2 - 0.5)
    torch.testing.assert_close(up[0, 0, :, 16], torch.full((9,), 7.0))
    coarse16 = torch.arange(4.0).expand(1, 1, 2, 4)
    j = torch.arange(2, 14, dtype=torch.float32)
    torch.testing.assert_close(upsample_aligned(coarse16, 4, (9, 17))[0, 0, 0, 2:14],
                               (j + 0.5) / 4 - 0.5)


@pytest.mark.skipif(not CUDA, reason="unchecked here: CUDA hypercolumns (fp32 and bf16 autocast) "
                    "against the CPU ones need a CUDA GPU, and this machine has none")
def test_cuda_bf16_matches_float32(net, images):
    cuda_net = S2DHMNetwork(seed=1).cuda().eval()
    with torch.inference_mode():
        ref = net(images)
        full = cuda_net(images.cuda())
        half = cuda_net(images.cuda(), autocast_bf16=True)
    torch.testing.assert_close(full.hypercolumn.cpu(), ref.hypercolumn, atol=1e-4, rtol=1e-3)
    assert half.hypercolumn.dtype == torch.float32
    cos = (half.hypercolumn * full.hypercolumn).sum(1)
    assert cos.min() > 0.98
    assert F.cosine_similarity(half.global_descriptor, full.global_descriptor).item() > 0.95


# ----------------------------------------------------------------------------- NetVLAD / PCA

def test_netvlad_matches_reference_loop():
    torch.manual_seed(0)
    layer = NetVLAD(num_clusters=8, dim=16)
    features = torch.randn(2, 16, 5, 7)
    out = layer(features)
    assert out.shape == (2, 128)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(2))
    x = F.normalize(features, dim=1).flatten(2)                       # [B, D, N]
    a = F.softmax(torch.einsum("kd,bdn->bkn", layer.conv.weight[:, :, 0, 0], x), dim=1)
    ref = torch.stack([torch.stack([(a[b, k] * (x[b] - layer.centroids[k][:, None])).sum(1)
                                    for k in range(8)]) for b in range(2)])
    ref = F.normalize(F.normalize(ref, dim=2).flatten(1), dim=1)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_network_global_descriptor_dim(net, images):
    with torch.inference_mode():
        desc = net(images.repeat(2, 1, 1, 1)).global_descriptor
    assert desc.shape == (2, 32768)
    torch.testing.assert_close(desc.norm(dim=1), torch.ones(2))


def test_pca_dims_norm_and_round_trip():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 300)).astype(np.float32) @ np.diag(np.linspace(3, 0.1, 300)).astype(np.float32)
    pca = PCA.fit(x, dim=1024)
    assert pca.output_dim == 39 and pca.input_dim == 300  # capped at N - 1
    np.testing.assert_allclose(pca.components @ pca.components.T, np.eye(39), atol=1e-4)
    assert np.all(np.diff(pca.explained_variance) <= 1e-6)
    y = pca.transform(x)
    assert y.shape == (40, 39)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1, atol=1e-5)
    restored = PCA.from_state_dict(pca.state_dict())
    np.testing.assert_array_equal(restored.transform(x[:3]), pca.transform(x[:3]))
    yt = pca.transform(torch.from_numpy(x[:3]))
    assert isinstance(yt, torch.Tensor) and yt.shape == (3, 39)
    np.testing.assert_allclose(yt.numpy(), y[:3], atol=1e-6)
    small = PCA.fit(torch.from_numpy(x), dim=8, whiten=True)
    assert small.output_dim == 8 and PCA.from_state_dict(small.state_dict()).whiten
    with pytest.raises(ValueError, match="last dimension 300"):
        pca.transform(np.zeros((2, 10), np.float32))


def test_pca_randomised_path_agrees_with_exact():
    rng = np.random.default_rng(1)
    basis = rng.normal(size=(6, 64))
    x = (rng.normal(size=(4200, 6)) * [9, 7, 5, 3, 2, 1]) @ basis + 0.01 * rng.normal(size=(4200, 64))
    randomised = PCA.fit(x.astype(np.float32), dim=4)
    exact = PCA.fit(x[:4096].astype(np.float32), dim=4)
    overlap = np.abs(randomised.components @ exact.components.T)
    assert np.all(np.diag(overlap) > 0.99)


# ----------------------------------------------------------------------------- checkpoints

def _encoder_state(reference, prefix):
    return {f"{prefix}{k}": v.clone() for k, v in reference.encoder.state_dict().items()}


@pytest.mark.parametrize("module_infix", [True, False])
def test_load_s2dhm_format(net, tmp_path, module_infix):
    enc, pool = ("encoder.module.", "pool.module.") if module_infix else ("encoder.", "pool.")
    state = _encoder_state(net, enc)
    state[pool + "centroids"] = net.netvlad.centroids.detach().clone()
    state[pool + "conv.weight"] = net.netvlad.conv.weight.detach().clone()
    path = tmp_path / "weights.pth.tar"
    torch.save({"epoch": 3, "best_score": np.float64(0.9), "state_dict": state}, path)
    loaded, info = load_network(path, seed=5)
    assert info.kind == "s2dhm" and not info.random and not info.netvlad_random
    assert info.path == str(path)
    torch.testing.assert_close(loaded.encoder[26].weight, net.encoder[26].weight)
    torch.testing.assert_close(loaded.netvlad.centroids, net.netvlad.centroids)
    assert info.sha256 == weights_hash(net) and not loaded.training


def test_load_s2dhm_with_conv_bias(net, tmp_path):
    state = _encoder_state(net, "encoder.")
    state["pool.centroids"] = net.netvlad.centroids.detach().clone()
    state["pool.conv.weight"] = net.netvlad.conv.weight.detach().clone()
    state["pool.conv.bias"] = torch.arange(64.0)
    torch.save({"state_dict": state}, tmp_path / "w.pth.tar")
    loaded, _ = load_network(tmp_path / "w.pth.tar")
    torch.testing.assert_close(loaded.netvlad.conv.bias, torch.arange(64.0))


def test_load_gn_net_format(net, tmp_path, caplog):
    state = _encoder_state(net, "embedding_net._model.")
    torch.save({"epoch": 30, "model_state_dict": state}, tmp_path / "30_best.pth.tar")
    with caplog.at_level(logging.WARNING):
        loaded, info = load_network(tmp_path / "30_best.pth.tar", seed=2)
    assert info.kind == "gn_net" and not info.random and info.netvlad_random
    assert "NetVLAD" in caplog.text
    torch.testing.assert_close(loaded.encoder[0].bias, net.encoder[0].bias)
    torch.testing.assert_close(loaded.netvlad.centroids, S2DHMNetwork(seed=2).netvlad.centroids)


def test_load_torchvision_format(net, tmp_path):
    state = _encoder_state(net, "features.")
    state["classifier.6.weight"] = torch.zeros(10, 4)
    torch.save(state, tmp_path / "vgg16-397923af.pth")
    loaded, info = load_network(tmp_path / "vgg16-397923af.pth")
    assert info.kind == "torchvision" and info.netvlad_random
    torch.testing.assert_close(loaded.encoder[19].weight, net.encoder[19].weight)


@pytest.mark.parametrize("half", [False, True])
def test_own_format_round_trip(net, tmp_path, half):
    path = tmp_path / "sub" / "net.pt"
    sha = save_network(net, path, extra={"trained_on": "synthetic", "epochs": [1, 2]}, half=half)
    assert sha == weights_hash(net)
    loaded, info = load_network(path)
    assert info.kind == "ros2_s2dhm" and info.meta["trained_on"] == "synthetic"
    assert loaded.encoder[2].weight.dtype == torch.float32
    if half:
        torch.testing.assert_close(loaded.encoder[2].weight, net.encoder[2].weight.half().float())
        assert info.sha256 != sha
    else:
        assert info.sha256 == sha
        torch.testing.assert_close(loaded.netvlad.conv.weight, net.netvlad.conv.weight)
    with pytest.raises(ValueError, match="extra.bad"):
        save_network(net, path, extra={"bad": object()})


def test_checkpoint_errors(net, tmp_path):
    with pytest.raises(CheckpointError, match="nowhere.pth.*not found"):
        load_network(tmp_path / "nowhere.pth")
    (tmp_path / "text.pth").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="text.pth"):
        load_network(tmp_path / "text.pth")
    torch.save({"foo": 1}, tmp_path / "unknown.pth")
    with pytest.raises(CheckpointError, match="unknown weights format"):
        load_network(tmp_path / "unknown.pth")

    state = _encoder_state(net, "encoder.module.")
    state["pool.module.centroids"] = torch.zeros(64, 512)
    state["pool.module.conv.weight"] = torch.zeros(64, 512, 1, 1)
    missing = dict(state)
    del missing["encoder.module.5.weight"]
    torch.save({"state_dict": missing}, tmp_path / "missing.pth.tar")
    with pytest.raises(CheckpointError, match=r"missing key 'encoder\.module\.5\.weight'") as err:
        load_network(tmp_path / "missing.pth.tar")
    assert "missing.pth.tar" in str(err.value) and "[128, 64, 3, 3]" in str(err.value)

    wrong = dict(state)
    wrong["pool.module.centroids"] = torch.zeros(32, 512)
    torch.save({"state_dict": wrong}, tmp_path / "wrong.pth.tar")
    with pytest.raises(CheckpointError) as err:
        load_network(tmp_path / "wrong.pth.tar")
    message = str(err.value)
    assert "'pool.module.centroids'" in message and "[32, 512]" in message and "[64, 512]" in message

    extra = dict(state)
    extra["encoder.module.30.weight"] = torch.zeros(3)
    torch.save({"state_dict": extra}, tmp_path / "extra.pth.tar")
    with pytest.raises(CheckpointError, match=r"unexpected encoder key 'encoder\.module\.30\.weight'"):
        load_network(tmp_path / "extra.pth.tar")

    torch.save({"format": "ros2_s2dhm", "version": 7, "encoder": {}, "netvlad": {}},
               tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="'version' is 7"):
        load_network(tmp_path / "future.pt")


def test_random_init_deterministic_and_loud(caplog):
    before = torch.random.get_rng_state()
    with caplog.at_level(logging.WARNING):
        a, info_a = load_network(None, seed=3)
    assert torch.equal(before, torch.random.get_rng_state())  # global RNG untouched
    assert "RANDOM" in caplog.text and info_a.random and info_a.kind == "random"
    b, info_b = load_network(None, seed=3)
    c, info_c = load_network(None, seed=4)
    assert info_a.sha256 == info_b.sha256 == weights_hash(b)
    assert info_c.sha256 != info_a.sha256
    torch.testing.assert_close(a.encoder[0].weight, b.encoder[0].weight)
    assert not torch.equal(a.encoder[0].weight, c.encoder[0].weight)
    with torch.no_grad():
        c.encoder[0].bias[0] += 1.0
    assert weights_hash(c) != info_c.sha256


@pytest.mark.skipif(not CUDA, reason="unchecked here: that loading onto a CUDA device keeps the "
                    "weights hash needs a CUDA GPU, and this machine has none")
def test_load_network_on_cuda_hash_is_device_independent():
    net_cpu, info_cpu = load_network(None, device="cpu", seed=0)
    net_gpu, info_gpu = load_network(None, device="cuda", seed=0)
    assert next(net_gpu.parameters()).is_cuda and info_gpu.sha256 == info_cpu.sha256
