"""The localizer's options by flat name: the table the node, the tools and the YAML share.

Flat names: top-level fields of :class:`~ros2_s2dhm.localizer.LocalizerConfig` keep their name,
section fields are ``<section>_<field>`` unless the field names itself (see
:func:`ros2_s2dhm.options.options_of`).
"""
from __future__ import annotations

from .localizer import LocalizerConfig
from .options import Option, build_config, option_table


def localizer_options() -> dict[str, Option]:
    """``{flat name: Option}`` of LocalizerConfig (the node's, the tools' and the YAML's)."""
    return option_table(LocalizerConfig)


def localizer_config(**values) -> LocalizerConfig:
    """A validated LocalizerConfig from flat options (None keeps the default).

    Raises OptionError for an unknown name, a value out of range or an inconsistent set.
    """
    return build_config(LocalizerConfig, values)
