"""Choices every caller (node, offline tools) makes the same way: device and weights."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .localizer_options import localizer_config

logger = logging.getLogger(__name__)

#: Weights trained by the project and shipped with the package (see weights/MODEL_CARD.md).
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "default.pth"
RANDOM = ("random", "none")


def resolve_device(name: str = "auto") -> str:
    """'auto' -> 'cuda' when a GPU is usable else 'cpu'; 'cuda' without a GPU is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but no CUDA GPU is available; use 'cpu'")
    return name


def resolve_weights(name: str | None = "default") -> str | None:
    """'default' -> the shipped weights (None with a warning when not shipped),
    'random'/'none' -> None (seeded random initialisation), anything else: a path."""
    if name is None or str(name).lower() in RANDOM:
        return None
    if str(name).lower() == "default":
        if DEFAULT_WEIGHTS.is_file():
            return str(DEFAULT_WEIGHTS)
        logger.warning("no default weights shipped at %s: using random initialisation", DEFAULT_WEIGHTS)
        return None
    return str(name)


def build_localizer(map_dir, weights: str | None = "default", device: str = "auto", **options):
    """The one way node, evaluator and benchmark assemble the pipeline.

    Loads the network (``weights``: 'default', 'random' or a path), the map (refused when built
    with other weights) and returns ``(Localizer, WeightsInfo)``.
    """
    from .features.checkpoints import load_network
    from .localizer import Localizer
    from .reference_map import ReferenceMap

    config = localizer_config(**options)
    if not config.matcher.use_ratio_test:
        logger.warning("S2DHM's ratio test is OFF: ambiguous matches are kept, so textureless or "
                       "unmapped views may still produce a pose")
    device = resolve_device(device)
    network, info = load_network(resolve_weights(weights), device=device)
    reference_map = ReferenceMap.load(map_dir, expected_weights_sha256=info.sha256)
    localizer = Localizer(network, reference_map, config, device=device,
                          weights_random=info.random)
    return localizer, info
