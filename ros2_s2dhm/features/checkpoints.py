"""Loading and saving network weights; the format of a file is detected from its keys.

Supported files (all read with ``torch.load(weights_only=True)``, nothing is downloaded):

* ``s2dhm``: S2DHM's ``weights.pth.tar`` -- ``{"state_dict": {...}}`` with
  ``encoder[.module].<i>.weight|bias``, ``pool[.module].centroids`` [64, 512],
  ``pool[.module].conv.weight`` [64, 512, 1, 1] (and ``conv.bias`` [64] if the file has one).
* ``gn_net``: fine-tuned encoders of the gn_net training code -- ``{"model_state_dict":
  {"embedding_net._model.<i>.weight|bias": ...}}``; encoder only, NetVLAD stays random.
* ``torchvision``: an ImageNet VGG-16 state dict already on disk (``features.<i>.*``,
  ``classifier.*`` ignored); NetVLAD stays random.
* ``ros2_s2dhm``: this package's own format written by :func:`save_network`:
  ``{"format": "ros2_s2dhm", "version": 1, "encoder": sd, "netvlad": sd, "meta": {...}}``
  (tensors may be float16; they are cast to float32).

``load_network(None)`` gives the seeded random network of :class:`S2DHMNetwork` and warns.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ros2_s2dhm.errors import CheckpointError
from ros2_s2dhm.features.backbone import HYPERCOLUMN_LAYERS, S2DHMNetwork

__all__ = ["CheckpointError", "WeightsInfo", "FORMAT_NAME", "FORMAT_VERSION", "load_network",
           "save_network", "weights_hash", "read_checkpoint"]

logger = logging.getLogger(__name__)

FORMAT_NAME = "ros2_s2dhm"
FORMAT_VERSION = 1


@dataclass
class WeightsInfo:
    """Where the weights came from.

    kind: "s2dhm" | "gn_net" | "torchvision" | "ros2_s2dhm" | "random";
    path: the file, None for random; sha256: :func:`weights_hash` of the loaded network;
    random: the encoder (hence the hypercolumns) is randomly initialised;
    netvlad_random: the NetVLAD head is randomly initialised (retrieval is meaningless);
    meta: the ``meta`` dict of a ``ros2_s2dhm`` file, else empty.
    """

    kind: str
    path: str | None
    sha256: str
    random: bool
    netvlad_random: bool = False
    meta: dict = field(default_factory=dict)


def weights_hash(net: nn.Module) -> str:
    """sha256 hex digest over the state dict in key order (name, dtype, shape and bytes of each
    tensor, moved to CPU). Identical weights give identical hashes on any device."""
    digest = hashlib.sha256()
    for key, tensor in net.state_dict().items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    return digest.hexdigest()


# ----------------------------------------------------------------------------- reading

def _numpy_safe_globals() -> list:
    """numpy objects that old checkpoints carry next to their tensors (e.g. ``best_score``)."""
    scalar = np._core.multiarray.scalar
    dtypes = [type(np.dtype(name)) for name in ("float64", "float32", "int64", "int32", "bool")]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype, np.ndarray,
            np._core.multiarray._reconstruct,
            (np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"), *dtypes]


def read_checkpoint(path: str | Path) -> Mapping:
    """torch.load a weights file safely (``weights_only=True``, numpy scalars allowed) on CPU.

    Raises:
        CheckpointError: missing file, a directory, or not a readable PyTorch file.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: weights file not found")
    if not path.is_file():
        raise CheckpointError(f"{path}: expected a weights file, found a directory")
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"{path}: cannot be read as a PyTorch weights file with weights_only=True "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: unknown weights format: top level is a "
                              f"{type(obj).__name__}, expected a dict")
    return obj


def _strip_module(key: str) -> str:
    """Drop DataParallel ``module`` path components: ``encoder.module.0.weight`` -> ``encoder.0.weight``."""
    return ".".join(part for part in key.split(".") if part != "module")


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _has_prefix(state: Mapping, prefix: str) -> bool:
    return any(_strip_module(k).startswith(prefix) for k in state)


@dataclass
class _Part:
    """The tensors of one sub-module found in a file: ours -> (key in the file, tensor)."""

    container: str                       # where in the file, e.g. "state_dict"
    tensors: dict[str, tuple[str, torch.Tensor]]
    file_prefix: str                     # prefix as spelled in the file, for messages

    def file_key(self, key: str) -> str:
        return self.file_prefix + key


def _select(state: Mapping, prefix: str, container: str) -> _Part:
    """Keys of ``state`` starting with ``prefix`` (after stripping ``module.``), prefix removed."""
    tensors, file_prefix = {}, None
    for key, value in state.items():
        stripped = _strip_module(key)
        if not stripped.startswith(prefix):
            continue
        local = stripped[len(prefix):]
        tensors[local] = (key, value)
        if file_prefix is None and key.endswith(local):
            file_prefix = key[: len(key) - len(local)]
    return _Part(container, tensors, file_prefix if file_prefix is not None else prefix)


def _load_part(module: nn.Module, part: _Part, path: Path, what: str) -> None:
    """Copy ``part`` into ``module`` (float32), checking keys and shapes."""
    where = f"{path} [{part.container}]" if part.container else str(path)
    expected = module.state_dict()
    if not part.tensors:
        raise CheckpointError(f"{where}: no {what} weights (keys '{part.file_prefix}*') found")
    unexpected = sorted(set(part.tensors) - set(expected))
    if unexpected:
        raise CheckpointError(
            f"{where}: unexpected {what} key '{part.tensors[unexpected[0]][0]}' "
            f"({len(unexpected)} unexpected in total); expected keys "
            f"'{part.file_key(next(iter(expected)))}' ... for a VGG-16 features[:29] / NetVLAD "
            "layout")
    state = {}
    for key, reference in expected.items():
        if key not in part.tensors:
            raise CheckpointError(f"{where}: missing key '{part.file_key(key)}' "
                                  f"(expected shape {list(reference.shape)})")
        file_key, tensor = part.tensors[key]
        if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
            raise CheckpointError(f"{where}: key '{file_key}' is not a floating-point tensor "
                                  f"(found {type(tensor).__name__}"
                                  f"{' ' + str(tensor.dtype) if isinstance(tensor, torch.Tensor) else ''})")
        if tuple(tensor.shape) != tuple(reference.shape):
            raise CheckpointError(f"{where}: key '{file_key}' has shape {list(tensor.shape)}, "
                                  f"expected {list(reference.shape)}")
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{where}: key '{file_key}' contains NaN or inf values")
        state[key] = tensor.to(torch.float32)
    module.load_state_dict(state, strict=True)


def _warn_unused(path: Path, state: Mapping, used_prefixes: tuple[str, ...],
                 ignored_prefixes: tuple[str, ...] = ()) -> None:
    unused = [k for k in state if not any(_strip_module(k).startswith(p)
                                          for p in used_prefixes + ignored_prefixes)]
    if unused:
        logger.warning("%s: ignoring %d unknown keys, e.g. %s", path, len(unused), unused[:3])


def _detect(obj: Mapping, path: Path) -> tuple[str, _Part, _Part | None, dict]:
    """-> (kind, encoder part, netvlad part or None, meta)."""
    if obj.get("format") == FORMAT_NAME:
        version = obj.get("version")
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path}: field 'version' is {version!r}, this package reads "
                                  f"version {FORMAT_VERSION}")
        for key in ("encoder", "netvlad"):
            if not isinstance(obj.get(key), Mapping):
                raise CheckpointError(f"{path}: missing or malformed field '{key}' "
                                      "(expected a state dict)")
        meta = obj.get("meta", {})
        return (FORMAT_NAME, _select(obj["encoder"], "", "encoder"),
                _select(obj["netvlad"], "", "netvlad"), dict(meta) if isinstance(meta, Mapping) else {})
    if isinstance(obj.get("state_dict"), Mapping):
        state, container = obj["state_dict"], "state_dict"
    elif isinstance(obj.get("model_state_dict"), Mapping):
        state, container = obj["model_state_dict"], "model_state_dict"
    elif _is_state_dict(obj):
        state, container = obj, ""
    else:
        raise CheckpointError(
            f"{path}: unknown weights format; expected a dict with 'state_dict' (S2DHM), "
            f"'model_state_dict' (gn_net), 'format': '{FORMAT_NAME}', or a VGG-16 state dict; "
            f"found top-level keys {sorted(map(str, obj))[:8]}")
    if _has_prefix(state, "encoder."):
        _warn_unused(path, state, ("encoder.", "pool."))
        return ("s2dhm", _select(state, "encoder.", container),
                _select(state, "pool.", container), {})
    if _has_prefix(state, "embedding_net._model."):
        _warn_unused(path, state, ("embedding_net._model.",))
        return "gn_net", _select(state, "embedding_net._model.", container), None, {}
    if _has_prefix(state, "features."):
        _warn_unused(path, state, ("features.",), ("classifier.",))
        features = _select(state, "features.", container)
        # torchvision's full VGG-16 has no parameters at 29 (relu5_3) and 30 (pool5): nothing to drop.
        return "torchvision", features, None, {}
    raise CheckpointError(
        f"{path}: unknown weights format in '{container or '<top level>'}': no keys starting with "
        f"'encoder.' (S2DHM), 'embedding_net._model.' (gn_net) or 'features.' (torchvision); "
        f"found e.g. {list(state)[:5]}")


def load_network(path: str | Path | None, device: str | torch.device = "cpu",
                 seed: int = 0) -> tuple[S2DHMNetwork, WeightsInfo]:
    """Build :class:`S2DHMNetwork` and load weights from ``path`` (format auto-detected).

    Args:
        path: weights file, or None for the seeded random initialisation (logs a warning).
        device: device of the returned network.
        seed: seed of the random initialisation of whatever the file does not provide.
    Returns:
        (network in eval mode on ``device``, :class:`WeightsInfo`).
    Raises:
        CheckpointError: missing file, unknown format, missing/unexpected key, wrong shape;
            the message names the file, the key and the expected and found shapes.
    """
    if path is None:
        net = S2DHMNetwork(seed=seed)
        logger.warning(
            "No network weights given: using a RANDOM VGG-16/NetVLAD initialisation (seed %d). "
            "Hypercolumns and retrieval will not be meaningful; pass S2DHM, gn_net or "
            "ros2_s2dhm weights for real localization.", seed)
        net = net.to(device).eval()
        return net, WeightsInfo("random", None, weights_hash(net), random=True,
                                netvlad_random=True)
    path = Path(path)
    obj = read_checkpoint(path)
    kind, encoder_part, netvlad_part, meta = _detect(obj, path)
    has_bias = netvlad_part is not None and "conv.bias" in netvlad_part.tensors
    net = S2DHMNetwork(netvlad_bias=has_bias, seed=seed)
    _load_part(net.encoder, encoder_part, path, "encoder")
    if netvlad_part is not None:
        _load_part(net.netvlad, netvlad_part, path, "NetVLAD")
    else:
        logger.warning("%s (%s): no NetVLAD weights in the file; the NetVLAD head is RANDOM "
                       "(seed %d), so image retrieval will not be meaningful.", path, kind, seed)
    net = net.to(device).eval()
    info = WeightsInfo(kind, str(path), weights_hash(net), random=False,
                       netvlad_random=netvlad_part is None, meta=meta)
    logger.info("Loaded %s weights from %s (sha256 %s)", kind, path, info.sha256[:12])
    return net, info


# ----------------------------------------------------------------------------- writing

def _check_plain(value, where: str) -> None:
    """Reject values that ``torch.load(weights_only=True)`` could not read back."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: keys must be strings, found {key!r}")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise ValueError(f"{where}: expected str/int/float/bool/None/list/dict, "
                         f"found {type(value).__name__}")


def save_network(net: S2DHMNetwork, path: str | Path, extra: dict | None = None,
                 half: bool = False) -> str:
    """Write ``net`` in the ``ros2_s2dhm`` format (atomically); returns the weights sha256.

    Args:
        extra: plain-data metadata stored under ``meta`` (e.g. training configuration).
        half: store tensors as float16 (half the size; loading casts back to float32, so the
            loaded network's hash is that of the rounded weights).
    """
    path = Path(path)
    extra = dict(extra or {})
    _check_plain(extra, "extra")
    dtype = torch.float16 if half else torch.float32

    def to_file(module: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", dtype).clone() for k, v in module.state_dict().items()}

    sha256 = weights_hash(net)
    meta = {**extra, "num_clusters": net.netvlad.num_clusters, "dim": net.netvlad.dim,
            "netvlad_bias": net.netvlad.conv.bias is not None,
            "hypercolumn_layers": list(HYPERCOLUMN_LAYERS),
            "dtype": "float16" if half else "float32", "source_sha256": sha256}
    payload = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "encoder": to_file(net.encoder),
               "netvlad": to_file(net.netvlad), "meta": meta}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return sha256
