"""Command-line pieces shared by the offline tools."""
from __future__ import annotations

import argparse

from ros2_s2dhm.localizer import LocalizerConfig
from ros2_s2dhm.options import build_config, option_table
from ros2_s2dhm.runtime import resolve_device, resolve_weights

__all__ = ["add_weights_args", "add_config_args", "config_from_args", "add_localizer_args",
           "localizer_options", "resolve_device", "resolve_weights"]


def add_weights_args(parser: argparse.ArgumentParser) -> None:
    """--weights (default: shipped weights; 'random' for the seeded random init) and --device."""
    parser.add_argument("--weights", default="default",
                        help="weights file (S2DHM, gn_net, torchvision VGG-16 or ros2_s2dhm format), "
                             "'default' for the shipped weights or 'random' (default %(default)s)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default %(default)s)")


def add_config_args(parser: argparse.ArgumentParser, config_cls, title: str,
                    defaults: dict | None = None, exclude=()) -> None:
    """One flag per option of a config dataclass (``--image-size``, ``--pca-whiten/--no-pca-
    whiten``, ``--taps 0 1``, ...), from its :func:`~ros2_s2dhm.options.option` declarations:
    help, bounds and choices stated once. An unset flag is None and keeps the config's default;
    ``defaults`` overrides a tool's defaults by option name."""
    defaults = defaults or {}
    group = parser.add_argument_group(title)
    for name, opt in option_table(config_cls).items():
        if name in exclude:
            continue
        flag = "--" + name.replace("_", "-")
        help_text = opt.help + (f" ({opt.range_text()})" if opt.range_text() else "")
        default = defaults.get(name)
        shown = opt.default if default is None else default
        if opt.kind is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction,
                               default=default, help=f"{help_text} (default {shown})")
        elif opt.kind is list:
            element = type(opt.default[0]) if opt.default else float
            group.add_argument(flag, dest=name, type=element, nargs="+", default=default,
                               metavar=name.upper(),
                               help=f"{help_text} (default {' '.join(map(str, shown))})")
        else:
            group.add_argument(flag, dest=name, type=opt.kind, default=default,
                               choices=opt.choices, metavar=None if opt.choices else name.upper(),
                               help=f"{help_text} (default {shown})")


def config_from_args(config_cls, args: argparse.Namespace, exclude=()):
    """The config of :func:`add_config_args` flags, every value checked (OptionError names the
    flag's option)."""
    return build_config(config_cls, {name: getattr(args, name) for name in
                                     option_table(config_cls) if name not in exclude})


def add_localizer_args(parser: argparse.ArgumentParser, **defaults) -> None:
    """One flag per localizer option (``--top-k``, ``--pnp-threshold-px``, ``--refine-loss``,
    ``--use-ratio-test/--no-use-ratio-test``, ...); unset flags keep LocalizerConfig's
    defaults. ``defaults`` overrides a tool's defaults by option name (e.g. ``top_k=10``)."""
    add_config_args(parser, LocalizerConfig, "localizer options (defaults: LocalizerConfig's)",
                    defaults)


def localizer_options(args: argparse.Namespace) -> dict:
    """Flat options for ros2_s2dhm.runtime.build_localizer from add_localizer_args flags."""
    return {name: getattr(args, name) for name in option_table(LocalizerConfig)}
