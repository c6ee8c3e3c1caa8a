"""Command-line pieces shared by the offline tools."""
from __future__ import annotations

import argparse

from ros2_s2dhm.runtime import resolve_device, resolve_weights

__all__ = ["add_weights_args", "add_localizer_args", "localizer_options", "resolve_device",
           "resolve_weights"]


def add_weights_args(parser: argparse.ArgumentParser) -> None:
    """--weights (default: shipped weights; 'random' for the seeded random init) and --device."""
    parser.add_argument("--weights", default="default",
                        help="weights file (S2DHM, gn_net, torchvision VGG-16 or ros2_s2dhm format), "
                             "'default' for the shipped weights or 'random' (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default %(default)s)")


def add_localizer_args(parser: argparse.ArgumentParser, top_k_default: int | None = None) -> None:
    """Pipeline options shared by evaluate and benchmark (defaults: LocalizerConfig's)."""
    g = parser.add_argument_group("localizer")
    g.add_argument("--top-k", type=int, default=top_k_default, help="reference images retrieved per query")
    g.add_argument("--pnp-threshold", type=float, default=None,
                   help="RANSAC-PnP threshold in px at the query's resolution (default 12, "
                        "S2DHM's value for 1024 px images)")
    g.add_argument("--pnp-backend", choices=("opencv", "pycolmap", "poselib"), default=None)
    g.add_argument("--no-ratio-test", action="store_true",
                   help="keep matches that fail S2DHM's ratio test (unsafe: textureless views may "
                        "produce poses)")
    g.add_argument("--no-refine", action="store_true", help="skip Feature-metric PnP")
    g.add_argument("--intrinsics", choices=("query", "reference"), default=None,
                   help="camera used for PnP: the query's (default) or the top reference's (S2DHM)")
    g.add_argument("--min-confidence", type=float, default=None,
                   help="poses below this confidence are not returned (default 0.5; evaluate's "
                        "confidence curve shows the trade-off)")
    g.add_argument("--coarse-factor", type=int, default=None,
                   help="matching searches a query map pooled by this factor, then refines at "
                        "full resolution (default 2; 1 = exhaustive)")


def localizer_options(args: argparse.Namespace) -> dict:
    """Flat options for ros2_s2dhm.runtime.build_localizer from add_localizer_args flags."""
    return {"top_k": args.top_k, "pnp_threshold_px": args.pnp_threshold,
            "pnp_backend": args.pnp_backend, "intrinsics": args.intrinsics,
            "use_ratio_test": False if args.no_ratio_test else None,
            "refine_enabled": False if args.no_refine else None,
            "min_confidence": args.min_confidence, "coarse_factor": args.coarse_factor,
            "image_size": getattr(args, "image_size", None)}
