"""How an option is declared: :func:`option` fields of config dataclasses, read as :class:`Option`.

Each field of a config dataclass (:class:`~ros2_s2dhm.localizer.LocalizerConfig` and its
sections ``matcher``, ``pnp``, ``refine``, ``verification``; the service's
:class:`~ros2_s2dhm.service.ServiceConfig`; the map builder's and the trainers' configs) is
declared with :func:`option` (default, help text, bounds or choices). This module imports no
stage: the stages import it. From those declarations come

* the flat option names (``top_k``, ``pnp_threshold_px``, ``refine_loss``, ...): top-level fields
  keep their name, section fields are ``<section>_<field>`` unless the field names itself;
* the node's ROS parameters and their descriptors (``ros/parameters.py``),
* the offline tools' flags (``--top-k``, ``--refine-loss``, ...; ``offline_tools/common.py``),
* ``config/localize.yaml`` (generated, and checked by the tests).

:mod:`ros2_s2dhm.localizer_options` turns flat options into a validated ``LocalizerConfig``;
every invalid value raises :class:`OptionError` naming the option.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from .errors import S2DHMError

_KEY = "ros2_s2dhm.option"


class OptionError(S2DHMError, ValueError):
    """An option value out of its range, not one of its choices, or inconsistent with others."""


@dataclass(frozen=True)
class Option:
    """A settable option.

    name: flat name (ROS parameter, YAML key; tool flag ``--name-with-dashes``).
    path: field path in LocalizerConfig, e.g. ``("pnp", "reprojection_error_px")``; () for
        options that are not the localizer's (node parameters).
    kind: bool, int, float, str or list (of floats).
    low / high: inclusive bounds (None: open). choices: allowed values (str options).
    none_value: the value that stands for the field's None (``image_size`` 0: the map's size).
    read_only: a node parameter that takes effect only at start-up / configure.
    """

    name: str
    default: Any
    help: str
    kind: type
    path: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    none_value: Any = None
    read_only: bool = False

    def check(self, value):
        """``value`` converted to ``kind``; OptionError when it is out of range or not a choice."""
        if self.kind is bool:
            if not isinstance(value, bool):
                raise OptionError(f"option {self.name}: expected true or false, got {value!r}")
            return value
        if self.kind is list:
            if not isinstance(value, (list, tuple)) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise OptionError(f"option {self.name}: expected a list of numbers, got {value!r}")
            element = type(self.default[0]) if self.default else float  # int lists stay int
            if element is int and not all(float(v).is_integer() for v in value):
                raise OptionError(f"option {self.name}: expected a list of integers, got {value!r}")
            return [element(v) for v in value]
        if self.kind in (int, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    self.kind is int and not float(value).is_integer()):
                raise OptionError(f"option {self.name}: expected {self.kind.__name__}, got {value!r}")
            value = self.kind(value)
            if self.kind is float and not math.isfinite(value):
                raise OptionError(f"option {self.name}: must be finite, got {value}")
            if value == self.none_value:
                return value
            if (self.low is not None and value < self.low) or (
                    self.high is not None and value > self.high):
                raise OptionError(f"option {self.name}={value} is outside {self.range_text()}")
            return value
        if not isinstance(value, str):
            raise OptionError(f"option {self.name}: expected a string, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise OptionError(f"option {self.name}={value!r} is not one of {list(self.choices)}")
        return value

    def range_text(self) -> str:
        """Human-readable constraint, e.g. '[1, inf)' or 'one of a, b' ('' when free)."""
        if self.choices is not None:
            return "one of " + ", ".join(self.choices)
        if self.low is None and self.high is None:
            return ""
        low = "(-inf" if self.low is None else f"[{self.low:g}"
        high = "inf)" if self.high is None else f"{self.high:g}]"
        text = f"{low}, {high}"
        if self.none_value is not None:
            text += f" or {self.none_value}"
        return text


def option(default=dataclasses.MISSING, help: str = "", *, name: str | None = None,
           low: float | None = None, high: float | None = None,
           choices: tuple[str, ...] | None = None, kind: type | None = None,
           none_value=None, default_factory=dataclasses.MISSING):
    """A dataclass field declared as an option (see the module doc); ``default_factory`` marks a
    section (a nested config dataclass) whose fields are options in turn."""
    meta = {"help": help, "name": name, "low": low, "high": high, "choices": choices,
            "kind": kind, "none_value": none_value}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={_KEY: meta})
    return dataclasses.field(default=default, metadata={_KEY: meta})


def options_of(config_cls, prefix: str = "", path: tuple[str, ...] = ()) -> list[Option]:
    """Every option of a config dataclass, sections included (recursively), in field order.

    Raises TypeError for a field not declared with :func:`option` (every field is an option).
    """
    out = []
    defaults = config_cls()
    for f in dataclasses.fields(config_cls):
        meta = f.metadata.get(_KEY)
        if meta is None:
            raise TypeError(f"{config_cls.__name__}.{f.name} is not declared with options.option()")
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            out += options_of(type(value), f"{f.name}_", (*path, f.name))
            continue
        kind = meta["kind"] or (list if isinstance(value, (list, tuple)) else type(value))
        out.append(Option(name=meta["name"] or prefix + f.name, default=value if value is not None
                          else meta["none_value"], help=meta["help"], kind=kind,
                          path=(*path, f.name), low=meta["low"], high=meta["high"],
                          choices=meta["choices"], none_value=meta["none_value"]))
    return out


def option_table(config_cls) -> dict[str, Option]:
    """``{flat name: Option}`` of a config dataclass; TypeError when two share a name."""
    options = options_of(config_cls)
    names = [o.name for o in options]
    duplicated = {n for n in names if names.count(n) > 1}
    if duplicated:
        raise TypeError(f"{config_cls.__name__}: option names used twice: {sorted(duplicated)}")
    return {o.name: o for o in options}


def build_config(config_cls, values: dict):
    """A ``config_cls`` from flat option values (None keeps the default), every value checked.

    Raises OptionError for an unknown name, a value out of range or not a choice, or a set
    the dataclass refuses (its ``__post_init__`` / ``validate``).
    """
    known = option_table(config_cls)
    nested: dict[tuple[str, ...], dict] = {}
    for name, value in values.items():
        if name not in known:
            raise OptionError(f"unknown {config_cls.__name__} option '{name}'; known: "
                              f"{sorted(known)}")
        if value is None:
            continue
        opt = known[name]
        value = opt.check(value)
        if opt.none_value is not None and value == opt.none_value:
            value = None
        if isinstance(opt.default, tuple):  # a tuple field stays a tuple
            value = tuple(value)
        nested.setdefault(opt.path[:-1], {})[opt.path[-1]] = value
    try:
        defaults = config_cls()
        sections = {section[0]: dataclasses.replace(getattr(defaults, section[0]), **fields)
                    for section, fields in nested.items() if section}
        config = config_cls(**nested.get((), {}), **sections)
        check_config(config)
    except ValueError as exc:
        raise OptionError(str(exc)) from exc
    return config


def check_config(config) -> None:
    """OptionError naming the first field of a config dataclass (sections included) outside
    its declared bounds or choices; then the config's own ``validate()`` (cross-field rules)."""
    for opt in options_of(type(config)):
        value = config
        for part in opt.path:
            value = getattr(value, part)
        if value is not None:
            opt.check(list(value) if isinstance(value, tuple) else value)
    for f in dataclasses.fields(config):
        section = getattr(config, f.name)
        if dataclasses.is_dataclass(section) and hasattr(section, "validate"):
            section.validate()
    if hasattr(config, "validate"):
        config.validate()
