"""Other ways of running the S2DHM encoder pass, called exactly like the network.

A variant wraps an :class:`~ros2_s2dhm.features.backbone.S2DHMNetwork` and replaces only its
encoder pass (:meth:`S2DHMNetwork.encode`: images [B, 3, H, W] float32, ImageNet-normalised
-> five taps at strides (4, 8, 8, 16, 16) with (256, 256, 512, 512, 512) channels, conv5_3
[B, 512, H//16, W//16] and relu2_2 [B, 128, H//2, W//2]). Every variant returns those as
float32, contiguous, on the input's device, and the network's own float32 head
(:meth:`S2DHMNetwork.head`: hypercolumn or taps, NetVLAD, normalised detail tap) builds the
:class:`~ros2_s2dhm.features.backbone.NetworkOutput`. So a variant is called like the network,

    variant(images, autocast_bf16=None, detail=True, hypercolumn=True) -> NetworkOutput

and a :class:`~ros2_s2dhm.localizer.Localizer` uses it unchanged (``localizer.network =
variant``). ``autocast_bf16`` (the localizer's CUDA option) reaches only the ``fp32`` variant;
the others fix their own precision.

Variants (:data:`VARIANTS`, built by :func:`build_variant`):

- ``fp32`` — the network's eager float32 pass (the reference).
- ``channels_last`` — a copy of the network and the input in ``torch.channels_last``.
- ``bf16_autocast`` — ``torch.autocast(device, bfloat16)`` around the encoder. Fast only on
  CPUs with bfloat16 instructions (AVX512-BF16, AMX); on an AVX2-only CPU a 512x384 pass took
  about 150 times as long as fp32.
- ``compile`` — ``torch.compile`` (inductor) of the encoder pass; the first call compiles.
- ``onnxruntime`` — the encoder pass exported with ``torch.onnx.export`` (height and width
  dynamic) and run by onnxruntime's CPUExecutionProvider.
- ``int8`` — that ONNX model with its convolutions quantised to int8 (onnxruntime's static
  post-training quantisation, QDQ format, per-channel weights, activations calibrated with
  min/max on ``calibration`` images); needs calibration images.

A variant that cannot be built or run here (a package missing, export or compilation failing)
raises :class:`VariantUnavailable` naming the cause; an unknown name raises
:class:`UnknownVariantError`.
"""
from __future__ import annotations

import contextlib
import copy
import io
import logging
import tempfile
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

from ros2_s2dhm.errors import S2DHMError
from ros2_s2dhm.features.backbone import NetworkOutput, S2DHMNetwork

__all__ = ["VARIANTS", "REFERENCE", "RUNTIMES", "runtime_network", "BackboneVariant", "ChannelsLastVariant", "Bf16AutocastVariant",
           "CompiledVariant", "OnnxRuntimeVariant", "Int8Variant", "UnknownVariantError",
           "VariantUnavailable", "build_variant", "resolve_variant_names", "TapEncoder",
           "export_onnx", "quantize_int8"]

REFERENCE = "fp32"
ONNX_OUTPUTS = ("tap0", "tap1", "tap2", "tap3", "tap4", "conv5_3", "relu2_2")
Encoded = tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]


class UnknownVariantError(S2DHMError, ValueError):
    """A backbone variant name that is not in :data:`VARIANTS`."""


class VariantUnavailable(S2DHMError, RuntimeError):
    """A backbone variant that cannot be built or run here; the message says why."""


def _error_text(err: BaseException) -> str:
    """``Type: first line of the message`` (compiler and exporter errors run to pages)."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}".strip()


def _float32(taps: Sequence[torch.Tensor], conv5_3: torch.Tensor, relu2_2: torch.Tensor) -> Encoded:
    """The encoder outputs as float32, contiguous tensors (the head's and the localizer's input)."""
    return ([t.float().contiguous() for t in taps], conv5_3.float().contiguous(),
            relu2_2.float().contiguous())


class BackboneVariant(nn.Module):
    """The ``fp32`` reference and the base of the others: the network's own eager pass.

    Subclasses override :meth:`encode`; :meth:`forward` is the network's interface.
    """

    name = REFERENCE

    def __init__(self, network: S2DHMNetwork):
        super().__init__()
        self.network = network

    def encode(self, images: torch.Tensor, autocast_bf16: bool | None = None) -> Encoded:
        """images [B, 3, H, W] float32 -> (5 taps, conv5_3, relu2_2), float32 (see the module)."""
        return _float32(*self.network.encode(images, autocast_bf16))

    def forward(self, images: torch.Tensor, autocast_bf16: bool | None = None,
                **head_options) -> NetworkOutput:
        """images [B, 3, H, W] float32 -> :class:`NetworkOutput`, as ``S2DHMNetwork.forward``;
        ``head_options`` (``detail``, ``hypercolumn``) go to :meth:`S2DHMNetwork.head`."""
        return self.network.head(*self.encode(images, autocast_bf16), **head_options)

    def extra_repr(self) -> str:
        return f"variant={self.name!r}"


class ChannelsLastVariant(BackboneVariant):
    """A copy of the network and the input in ``torch.channels_last`` (NHWC) memory format;
    the outputs are made contiguous (NCHW) again for the head."""

    name = "channels_last"

    def __init__(self, network: S2DHMNetwork):
        super().__init__(network)
        self.nhwc = copy.deepcopy(network).to(memory_format=torch.channels_last)

    def encode(self, images: torch.Tensor, autocast_bf16: bool | None = None) -> Encoded:
        return _float32(*self.nhwc.encode(images.contiguous(memory_format=torch.channels_last),
                                          autocast_bf16=False))


class Bf16AutocastVariant(BackboneVariant):
    """The encoder under ``torch.autocast(<device>, dtype=torch.bfloat16)``: convolutions in
    bfloat16, outputs cast back to float32 (about 3 significant digits)."""

    name = "bf16_autocast"

    def encode(self, images: torch.Tensor, autocast_bf16: bool | None = None) -> Encoded:
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            encoded = self.network.encode(images, autocast_bf16=False)
        return _float32(*encoded)


class TapEncoder(nn.Module):
    """The encoder pass as one module with tensor outputs (what ``torch.compile`` and
    ``torch.onnx.export`` take): images [B, 3, H, W] -> (tap0, ..., tap4, conv5_3, relu2_2)."""

    def __init__(self, network: S2DHMNetwork):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        taps, conv5_3, relu2_2 = self.network.encode(images, autocast_bf16=False)
        return (*taps, conv5_3, relu2_2)


def _split(outputs: Sequence[torch.Tensor]) -> Encoded:
    """(tap0, ..., tap4, conv5_3, relu2_2) -> (taps, conv5_3, relu2_2), float32."""
    return _float32(list(outputs[:5]), outputs[5], outputs[6])


class CompiledVariant(BackboneVariant):
    """``torch.compile`` (inductor, default options) of :class:`TapEncoder`. The first call at
    an input shape compiles (tens of seconds on a small CPU); a compiler failure is raised as
    :class:`VariantUnavailable`, never silently run eagerly."""

    name = "compile"

    def __init__(self, network: S2DHMNetwork):
        super().__init__(network)
        self.compiled = torch.compile(TapEncoder(network))

    def encode(self, images: torch.Tensor, autocast_bf16: bool | None = None) -> Encoded:
        try:
            outputs = self.compiled(images)
        except Exception as err:  # inductor fails in many ways: no compiler, codegen, OOM
            raise VariantUnavailable(f"torch.compile failed: {_error_text(err)}") from err
        return _split(outputs)


def export_onnx(network: S2DHMNetwork, example: torch.Tensor | None = None) -> bytes:
    """The encoder pass as an ONNX model (bytes): input ``images`` [1, 3, H, W] float32 (one
    image, as the localizer runs it; H and W dynamic, 32 to 8192), outputs :data:`ONNX_OUTPUTS`
    (float32, at the strides of the module's docstring). ``example`` [1, 3, H, W] (default
    96x128) only guides the export."""
    example = torch.zeros(1, 3, 96, 128) if example is None else example[:1].detach().cpu()
    module = TapEncoder(copy.deepcopy(network).cpu()).eval()
    height = torch.export.Dim("height", min=32, max=8192)
    width = torch.export.Dim("width", min=32, max=8192)
    try:
        with warnings.catch_warnings(), torch.no_grad(), _quiet_loggers(), \
                contextlib.redirect_stdout(io.StringIO()):  # the exporter prints its progress
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, (example,), dynamo=True, verbose=False,
                                        input_names=["images"], output_names=list(ONNX_OUTPUTS),
                                        dynamic_shapes=({2: height, 3: width},))
        return program.model_proto.SerializeToString()
    except ImportError as err:
        raise VariantUnavailable(f"ONNX export needs onnx and onnxscript: {err}") from err
    except Exception as err:  # the exporter's own error types vary between torch versions
        raise VariantUnavailable(f"ONNX export failed: {_error_text(err)}") from err


@contextlib.contextmanager
def _quiet_loggers():
    """Only errors from the ONNX exporter's and quantiser's loggers (they log every pass at INFO
    and the quantiser's advice on the root logger) for a ``with`` block."""
    loggers = [logging.getLogger(n) for n in ("", "onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _ort():
    try:
        import onnxruntime  # noqa: PLC0415
    except ImportError as err:
        raise VariantUnavailable(f"onnxruntime is not installed: {err}") from err
    return onnxruntime


class OnnxRuntimeVariant(BackboneVariant):
    """The exported encoder (:func:`export_onnx`, one image per call) in an onnxruntime CPU
    session with as many intra-op threads as torch uses, which do not spin-wait between runs;
    the head stays torch. Inputs on
    another device are copied to the CPU and the outputs back."""

    name = "onnxruntime"

    def __init__(self, network: S2DHMNetwork, model: bytes | None = None,
                 example: torch.Tensor | None = None):
        super().__init__(network)
        ort = _ort()
        model = export_onnx(network, example) if model is None else model
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.inter_op_num_threads = 1
        # no spin-waiting after a run: the localizer's torch stages follow at once on the same
        # cores, and a CPU shared with other processes loses more to spinning threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own (pybind) exception types
            raise VariantUnavailable(f"onnxruntime cannot load the model: {_error_text(err)}") from err

    def encode(self, images: torch.Tensor, autocast_bf16: bool | None = None) -> Encoded:
        feed = {"images": images.detach().float().cpu().contiguous().numpy()}
        outputs = self.session.run(list(ONNX_OUTPUTS), feed)
        return _split([torch.from_numpy(o).to(images.device) for o in outputs])


def _calibration_reader(images: Sequence[torch.Tensor]):
    """An onnxruntime CalibrationDataReader over [1, 3, H, W] tensors (its class is defined
    here, where onnxruntime is known to be installed)."""
    from onnxruntime.quantization import CalibrationDataReader  # noqa: PLC0415

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._feeds = iter([{"images": t.detach().float().cpu().contiguous().numpy()}
                                for t in images])

        def get_next(self):
            return next(self._feeds, None)

    return Reader()


def quantize_int8(model: bytes, calibration: Sequence[torch.Tensor]) -> bytes:
    """Static int8 quantisation of the convolutions of an exported encoder: QDQ format,
    per-channel int8 weights, uint8 activations with min/max ranges from ``calibration``
    ([1, 3, H, W] tensors, e.g. a few map reference images). Returns the quantised model."""
    _ort()
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # noqa: PLC0415
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="s2dhm_int8_") as tmp, _quiet_loggers():
        source, prepared, target = (Path(tmp) / f"{n}.onnx" for n in ("fp32", "prepared", "int8"))
        source.write_bytes(model)
        try:  # shape inference and graph optimisation first, as onnxruntime recommends
            quant_pre_process(str(source), str(prepared))
            quantize_static(str(prepared), str(target), _calibration_reader(calibration),
                            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                            per_channel=True, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8)
        except Exception as err:  # the quantiser raises bare exceptions of many types
            raise VariantUnavailable(f"int8 quantisation failed: {_error_text(err)}") from err
        return target.read_bytes()


class Int8Variant(OnnxRuntimeVariant):
    """:class:`OnnxRuntimeVariant` with the convolutions quantised to int8
    (:func:`quantize_int8`, calibrated on ``calibration``) from ``model``, the float32 export
    of ``network`` (:func:`export_onnx`; exported here when None)."""

    name = "int8"

    def __init__(self, network: S2DHMNetwork, calibration: Sequence[torch.Tensor],
                 model: bytes | None = None):
        if not calibration:
            raise VariantUnavailable("int8 needs calibration images (e.g. a few map references)")
        model = export_onnx(network, calibration[0]) if model is None else model
        super().__init__(network, quantize_int8(model, calibration))


#: name -> builder(network, calibration) of a variant; ``calibration`` (a few [1, 3, H, W]
#: images at the size the variant will see) is used by ``int8`` and as ONNX export example.
VARIANTS: dict[str, Callable[[S2DHMNetwork, Sequence[torch.Tensor] | None], BackboneVariant]] = {
    "fp32": lambda network, calibration=None: BackboneVariant(network),
    "channels_last": lambda network, calibration=None: ChannelsLastVariant(network),
    "bf16_autocast": lambda network, calibration=None: Bf16AutocastVariant(network),
    "compile": lambda network, calibration=None: CompiledVariant(network),
    "onnxruntime": lambda network, calibration=None: OnnxRuntimeVariant(
        network, example=calibration[0] if calibration else None),
    "int8": lambda network, calibration=None: Int8Variant(network, calibration or []),
}


def resolve_variant_names(names: Iterable[str]) -> list[str]:
    """Command-line names -> variant names in :data:`VARIANTS` order, ``fp32`` (the reference of
    every comparison) always first; ``all`` means every variant. Raises UnknownVariantError."""
    names = list(names)
    unknown = [n for n in names if n != "all" and n not in VARIANTS]
    if unknown:
        raise UnknownVariantError(f"unknown backbone variant(s) {', '.join(map(repr, unknown))}; "
                                  f"known: {', '.join(VARIANTS)} or all")
    wanted = set(VARIANTS) if "all" in names else {REFERENCE, *names}
    return [n for n in VARIANTS if n in wanted]


def build_variant(name: str, network: S2DHMNetwork,
                  calibration: Sequence[torch.Tensor] | None = None) -> BackboneVariant:
    """The variant ``name`` of ``network`` (sharing its parameters unless it copies them),
    in eval mode. Raises UnknownVariantError, or VariantUnavailable when it cannot run here."""
    if name not in VARIANTS:
        raise UnknownVariantError(f"unknown backbone variant {name!r}; known: {', '.join(VARIANTS)}")
    network.eval()
    return VARIANTS[name](network, calibration).eval()


#: How a localizer on the CPU runs the encoder pass (``LocalizerConfig.backbone_runtime``).
RUNTIMES = ("torch", "onnxruntime")
_EXPORTS: "weakref.WeakKeyDictionary[S2DHMNetwork, bytes]" = weakref.WeakKeyDictionary()
logger = logging.getLogger(__name__)


def runtime_network(network: S2DHMNetwork, runtime: str, device) -> nn.Module:
    """The module a localizer calls for ``network`` (called like it): the network itself for
    ``torch`` or off the CPU; for ``onnxruntime`` an :class:`OnnxRuntimeVariant`, its export
    made once per network object (a few seconds) and kept while the network lives. When
    onnxruntime cannot run here the network itself is returned, with a warning naming why."""
    if runtime not in RUNTIMES:
        raise UnknownVariantError(f"unknown backbone runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    if runtime == "torch" or torch.device(device).type != "cpu":
        return network
    try:
        if network not in _EXPORTS:
            _EXPORTS[network] = export_onnx(network)
        return OnnxRuntimeVariant(network, _EXPORTS[network]).eval()
    except VariantUnavailable as err:
        logger.warning("backbone runtime onnxruntime unavailable, running torch: %s", err)
        return network
