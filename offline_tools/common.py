"""Command-line pieces shared by the offline tools."""
from __future__ import annotations

import argparse

from ros2_s2dhm.runtime import resolve_device, resolve_weights

__all__ = ["add_weights_args", "resolve_device", "resolve_weights"]


def add_weights_args(parser: argparse.ArgumentParser) -> None:
    """--weights (default: shipped weights; 'random' for the seeded random init) and --device."""
    parser.add_argument("--weights", default="default",
                        help="weights file (S2DHM, gn_net, torchvision VGG-16 or ros2_s2dhm format), "
                             "'default' for the shipped weights or 'random' (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default %(default)s)")
