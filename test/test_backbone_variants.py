"""Backbone variants: same outputs as the fp32 network within stated tolerances, and the
benchmark's ``--backbone-variants`` rows."""
import json

import pytest
import torch

from offline_tools import benchmark
from ros2_s2dhm.errors import S2DHMError
from ros2_s2dhm.evaluation import backbone_timing
from ros2_s2dhm.features import backbone_variants as bv
from ros2_s2dhm.features.backbone import S2DHMNetwork

# Largest absolute difference from fp32 allowed in any output (hypercolumn, taps, NetVLAD,
# detail: unit-norm vectors, entries up to ~1). Exact rewrites only reorder float32 sums;
# bfloat16 keeps 8 bits of mantissa; int8 quantises every convolution's input and weights.
TOLERANCE = {"channels_last": 1e-4, "compile": 1e-4, "onnxruntime": 1e-4,
             "bf16_autocast": 2e-2, "int8": 0.1}
# bfloat16 convolutions take seconds even at 128x96 on CPUs without bf16 instructions.
SHAPE = {"bf16_autocast": (1, 3, 32, 48)}


@pytest.fixture(scope="module")
def network():
    return S2DHMNetwork().eval()  # seed 0


def _image(shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _differences(a, b):
    """Field -> largest absolute difference, after checking that the shapes agree."""
    out = {}
    for field in ("hypercolumn", "global_descriptor", "detail"):
        x, y = getattr(a, field), getattr(b, field)
        assert (x is None) == (y is None), field
        if x is not None:
            assert x.shape == y.shape and x.dtype == y.dtype == torch.float32, field
            out[field] = float((x - y).abs().max())
    if a.taps is not None:
        assert [t.shape for t in a.taps] == [t.shape for t in b.taps]
        out["taps"] = max(float((x - y).abs().max()) for x, y in zip(a.taps, b.taps))
    return out


def test_registry_names_and_unknown_name(network):
    assert list(bv.VARIANTS)[0] == bv.REFERENCE == "fp32"
    assert bv.resolve_variant_names(["all"]) == list(bv.VARIANTS)
    assert bv.resolve_variant_names(["onnxruntime", "channels_last"]) == [
        "fp32", "channels_last", "onnxruntime"]  # the reference first, registry order
    with pytest.raises(bv.UnknownVariantError, match="fp16.*known: fp32"):
        bv.build_variant("fp16", network)
    with pytest.raises(S2DHMError, match="'tensorrt'"):
        bv.resolve_variant_names(["fp32", "tensorrt"])
    with pytest.raises(bv.VariantUnavailable, match="calibration"):
        bv.build_variant("int8", network)


@pytest.fixture(scope="module")
def onnx_model(network):
    """The exported encoder, shared by the onnxruntime and int8 variants (an export takes s)."""
    return bv.export_onnx(network)


@pytest.mark.parametrize("name", [n for n in bv.VARIANTS if n != bv.REFERENCE])
def test_variant_matches_fp32(network, onnx_model, name):
    shape = SHAPE.get(name, (1, 3, 96, 128))
    images = _image(shape, 1)
    calibration = [_image(shape, seed) for seed in (2, 3)]
    if name == "onnxruntime":
        variant = bv.OnnxRuntimeVariant(network, onnx_model).eval()
    elif name == "int8":
        variant = bv.Int8Variant(network, calibration, onnx_model).eval()
    else:
        variant = bv.build_variant(name, network, calibration)
    with torch.no_grad():
        expected = network(images)
        got = variant(images)
        # the localizer's call: taps instead of the hypercolumn, no detail level
        taps = variant(images, autocast_bf16=False, detail=False, hypercolumn=False)
        expected_taps = network(images, detail=False, hypercolumn=False)
    assert got.hypercolumn.shape == (1, 2048, shape[2] // 4, shape[3] // 4)
    assert got.detail.shape == (1, 128, shape[2] // 2, shape[3] // 2)
    worst = {**_differences(got, expected), **_differences(taps, expected_taps)}
    assert set(worst) == {"hypercolumn", "global_descriptor", "detail", "taps"}
    assert max(worst.values()) < TOLERANCE[name], worst
    assert taps.hypercolumn is None and taps.detail is None


def test_compile_failure_is_reported_not_raised_as_crash(network, monkeypatch):
    def broken(module):
        def run(*args):
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nmore lines")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    variant = bv.build_variant("compile", network)
    with pytest.raises(bv.VariantUnavailable, match="^torch.compile failed: RuntimeError: "
                                                    "InvalidCxxCompiler: no working C\\+\\+ compiler found$"):
        variant(_image((1, 3, 48, 64), 0))


def test_benchmark_backbone_variants_rows(tiny_synthetic, tiny_map_dir, tmp_path, monkeypatch,
                                          capsys):
    """fp32 and channels_last on one query of the tiny set; compile made to fail (its error is
    the row's), so the run also shows that a failing variant does not stop the others."""
    monkeypatch.setattr(torch, "compile", lambda module: _raise_on_call)
    out = tmp_path / "bench.json"
    benchmark.run(benchmark.parse_args(
        ["--dataset", str(tiny_synthetic.root), "--map", str(tiny_map_dir), "--devices", "cpu",
         "--weights", "random", "--queries", "1", "--warmup", "0", "--top-k", "2",
         "--no-use-ratio-test", "--backbone-variants", "compile", "channels_last",
         "--out", str(out), "--quiet", "--no-yardstick"]))
    printed = capsys.readouterr().out
    rows = {r["variant"]: r for r in json.loads(out.read_text())["backbone_variants"]}
    assert list(rows) == ["fp32", "channels_last", "compile"]
    for name in ("fp32", "channels_last"):
        row = rows[name]
        assert row["error"] is None and row["queries"] == 1 and row["image_size"] == 128
        assert 0 < row["forward_ms"]["median"] <= row["forward_ms"]["p90"]
        assert row["forward_ms"]["count"] == 1 and row["forward_ms"]["first_ms"] > 0
        assert row["query_ms"]["median"] > 0 and row["speedup"] > 0
        assert row["pose_delta"]["both"] == min(row["localized"], rows["fp32"]["localized"])
        assert f"\n{name} " in printed
    assert rows["fp32"]["speedup"] == 1.0
    if rows["fp32"]["localized"] and rows["channels_last"]["localized"]:
        assert rows["channels_last"]["pose_delta"]["translation_max"] < 1e-3
    assert "compiler missing" in rows["compile"]["error"]
    assert "compile        | not run: torch.compile failed" in printed


def _raise_on_call(*args):
    raise RuntimeError("compiler missing")


def test_pose_deltas_compare_queries_localized_by_both():
    import numpy as np

    from ros2_s2dhm.evaluation.run import QueryOutcome
    from ros2_s2dhm.geometry.pose import Pose
    from ros2_s2dhm.localizer import LocalizationResult

    def outcome(pose):
        return QueryOutcome("q", "c", LocalizationResult(success=pose is not None, pose=pose))

    a = Pose.from_center(np.eye(3), [0.0, 0.0, 0.0])
    b = Pose.from_center(np.eye(3), [0.3, 0.4, 0.0])
    deltas = backbone_timing.pose_deltas([outcome(a), outcome(a), outcome(None)],
                                         [outcome(b), outcome(a), outcome(a)])
    assert deltas["both"] == 2
    assert deltas["translation_max"] == pytest.approx(0.5)
    assert deltas["translation_median"] == pytest.approx(0.25)
    assert deltas["rotation_max_deg"] == pytest.approx(0.0, abs=1e-6)


def test_time_forward_times_the_first_call_apart_and_keeps_to_its_budget(monkeypatch):
    clock, costs = [0.0], []

    def variant(x, **options):  # the first call "compiles" for 10 s, later ones take 1 s
        assert options == {"detail": False}
        clock[0] += 10.0 if not costs else 1.0
        costs.append(x)

    monkeypatch.setattr(backbone_timing.time, "perf_counter", lambda: clock[0])
    inputs = list(range(5))  # 2 warm-up, 3 timed
    timing = backbone_timing.time_forward(variant, inputs, 2, detail=False)
    assert costs == inputs and timing["count"] == 3
    assert (timing["first_ms"], timing["median"]) == (10000.0, 1000.0)
    costs.clear()
    timing = backbone_timing.time_forward(variant, inputs, 2, budget_s=11.5, detail=False)
    assert costs == [0, 2] and timing["count"] == 1  # no second warm-up, one timed call
    costs.clear()
    timing = backbone_timing.time_forward(variant, inputs, 0, detail=False)  # an extra first call
    assert costs == [0, 0, 1, 2, 3, 4] and timing["count"] == 5 and timing["first_ms"] == 10000.0


def test_localizer_runs_its_backbone_runtime_and_switches_it(tiny_map_dir, random_network):
    """backbone_runtime: the CPU localizer calls the exported graph (onnxruntime, the default)
    or the torch network; both give the same matching features; an unusable runtime falls
    back to torch with a warning, an unknown one is refused."""
    import dataclasses

    import numpy as np

    from ros2_s2dhm.datasets.synthetic.generate import default_camera
    from ros2_s2dhm.localizer import Localizer, LocalizerConfig
    from ros2_s2dhm.reference_map import ReferenceMap

    net, info = random_network
    loc = Localizer(net, ReferenceMap.load(tiny_map_dir, info.sha256), LocalizerConfig(image_size=128))
    assert LocalizerConfig().backbone_runtime == "onnxruntime"
    assert isinstance(loc.network, bv.OnnxRuntimeVariant) and loc.model is net
    camera = default_camera(128, 96)
    image = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    exported = loc.features(image, camera)
    loc.configure(dataclasses.replace(loc.config, backbone_runtime="torch"))
    assert loc.network is net
    eager = loc.features(image, camera)
    assert float((exported.fine - eager.fine).abs().max()) < 1e-4
    assert float((exported.global_descriptor - eager.global_descriptor).abs().max()) < 1e-4
    with pytest.raises(bv.UnknownVariantError, match="unknown backbone runtime 'tensorrt'"):
        bv.runtime_network(net, "tensorrt", "cpu")
    assert bv.runtime_network(net, "onnxruntime", "meta") is net  # off the CPU: the network


def test_unusable_onnxruntime_falls_back_to_torch(network, monkeypatch, caplog):
    def fail(*args, **kwargs):
        raise bv.VariantUnavailable("onnxruntime is not installed: test")

    monkeypatch.setattr(bv, "export_onnx", fail)
    fresh = S2DHMNetwork().eval()
    with caplog.at_level("WARNING"):
        assert bv.runtime_network(fresh, "onnxruntime", "cpu") is fresh
    assert "onnxruntime unavailable, running torch: onnxruntime is not installed" in caplog.text
