"""Choices every caller (node, offline tools) makes the same way: device and weights."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

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


#: Flat option names (node parameters, tool flags) -> (section of LocalizerConfig, field).
LOCALIZER_OPTIONS = {
    "top_k": (None, "top_k"), "image_size": (None, "image_size"),
    "refine_enabled": (None, "refine_enabled"), "intrinsics": (None, "intrinsics"),
    "refine_max_points": (None, "refine_max_points"),
    "max_reference_distance_m": ("verification", "max_reference_distance_m"),
    "max_view_angle_deg": ("verification", "max_view_angle_deg"),
    "min_confidence": (None, "min_confidence"), "cascade_batch": (None, "cascade_batch"),
    "cascade_stop_confidence": (None, "cascade_stop_confidence"),
    "retrieval_extra": (None, "retrieval_extra"), "coarse_factor": ("matcher", "coarse_factor"),
    "autocast_bf16": (None, "autocast_bf16"),
    "use_ratio_test": ("matcher", "use_ratio_test"), "ratio": ("matcher", "ratio"),
    "pnp_backend": ("pnp", "backend"), "pnp_threshold_px": ("pnp", "reprojection_error_px"),
    "pnp_min_inliers": ("pnp", "min_inliers"), "refine_loss": ("refine", "loss"),
}


def localizer_config(**options):
    """A LocalizerConfig from flat options (see LOCALIZER_OPTIONS); None values keep defaults."""
    import dataclasses

    from .localizer import LocalizerConfig

    config = LocalizerConfig()
    for name, value in options.items():
        if name not in LOCALIZER_OPTIONS:
            raise ValueError(f"unknown localizer option '{name}'; known: {sorted(LOCALIZER_OPTIONS)}")
        if value is None:
            continue
        section, field = LOCALIZER_OPTIONS[name]
        if section is None:
            config = dataclasses.replace(config, **{field: value})
        else:
            sub = dataclasses.replace(getattr(config, section), **{field: value})
            config = dataclasses.replace(config, **{section: sub})
    if not config.matcher.use_ratio_test:
        logger.warning("S2DHM's ratio test is OFF: ambiguous matches are kept, so textureless or "
                       "unmapped views may still produce a pose")
    return config


def build_localizer(map_dir, weights: str | None = "default", device: str = "auto", **options):
    """The one way node, evaluator and benchmark assemble the pipeline.

    Loads the network (``weights``: 'default', 'random' or a path), the map (refused when built
    with other weights) and returns ``(Localizer, WeightsInfo)``.
    """
    from .features.checkpoints import load_network
    from .localizer import Localizer
    from .reference_map import ReferenceMap

    device = resolve_device(device)
    network, info = load_network(resolve_weights(weights), device=device)
    reference_map = ReferenceMap.load(map_dir, expected_weights_sha256=info.sha256)
    localizer = Localizer(network, reference_map, localizer_config(**options), device=device,
                          weights_random=info.random)
    return localizer, info
