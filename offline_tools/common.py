"""Command-line pieces shared by the offline tools."""
from __future__ import annotations

import argparse

from ros2_s2dhm.options import localizer_options as localizer_options_table
from ros2_s2dhm.runtime import resolve_device, resolve_weights

__all__ = ["add_weights_args", "add_localizer_args", "localizer_options", "resolve_device",
           "resolve_weights"]


def add_weights_args(parser: argparse.ArgumentParser) -> None:
    """--weights (default: shipped weights; 'random' for the seeded random init) and --device."""
    parser.add_argument("--weights", default="default",
                        help="weights file (S2DHM, gn_net, torchvision VGG-16 or ros2_s2dhm format), "
                             "'default' for the shipped weights or 'random' (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default %(default)s)")


def add_localizer_args(parser: argparse.ArgumentParser, **defaults) -> None:
    """One flag per localizer option (``--top-k``, ``--pnp-threshold-px``, ``--refine-loss``,
    ``--use-ratio-test/--no-use-ratio-test``, ...), all from the config dataclasses
    (:mod:`ros2_s2dhm.options`); unset flags keep LocalizerConfig's defaults. ``defaults``
    overrides a tool's defaults by option name (e.g. ``top_k=10``)."""
    g = parser.add_argument_group("localizer options (defaults: LocalizerConfig's)")
    for name, opt in localizer_options_table().items():
        flag = "--" + name.replace("_", "-")
        help_text = opt.help + (f" ({opt.range_text()})" if opt.range_text() else "")
        default = defaults.get(name)
        if opt.kind is bool:
            g.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                           default=default, help=f"{help_text} (default {opt.default})")
        else:
            g.add_argument(flag, dest=name, type=opt.kind, default=default,
                           choices=opt.choices, metavar=None if opt.choices else name.upper(),
                           help=f"{help_text} (default {opt.default if default is None else default})")


def localizer_options(args: argparse.Namespace) -> dict:
    """Flat options for ros2_s2dhm.runtime.build_localizer from add_localizer_args flags."""
    return {name: getattr(args, name) for name in localizer_options_table()}
