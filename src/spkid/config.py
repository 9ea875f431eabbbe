"""Checked configuration: each params.yaml block becomes a frozen dataclass.

Unknown keys and bad values fail at once, naming the block and the valid choices.
"""

import dataclasses
import types
import typing

PROFILES = ("demo", "course")  # the budgets a params block may override keys for


class ConfigError(ValueError):
    """A params block with an unknown key or a bad value."""


def build(cls, data: dict, where: str):
    """Build dataclass ``cls`` from ``data``, recursing into dataclass-typed fields.

    Args:
        cls: a frozen dataclass type.
        data: the params block (plain dict).
        where: the block's name in params.yaml, for error messages.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(f"{where}: {err}") from None


def _coerce(hint, value, where: str):
    if dataclasses.is_dataclass(hint):
        return build(hint, value, where)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            if option is type(None) and value is None:
                return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not _is(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    if origin in (list, tuple) and not isinstance(value, (list, tuple)):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    if origin in (list, tuple):
        return tuple(value)
    return value


def _is(value, hint) -> bool:
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check(condition: bool, where: str, message: str) -> None:
    """Raise ConfigError(``where: message``) unless ``condition``."""
    if not condition:
        raise ConfigError(f"{where}: {message}")


def merge(base: dict, override: dict) -> dict:
    """Deep-merge two plain dicts; ``override`` wins."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def profiled(block: dict, profile: str, where: str) -> dict:
    """``block`` without its profile sub-blocks, the ``profile`` one merged in.

    Args:
        block: a params block, e.g. {valid_ratio: 0.1, demo: {...}, course: {...}}.
        profile: demo or course.
        where: the block's name, for error messages.
    """
    check(profile in PROFILES, "profile", f"{profile!r} is not one of {list(PROFILES)}")
    check(isinstance(block, dict), where, f"expected a mapping, got {type(block).__name__}")
    base = {k: v for k, v in block.items() if k not in PROFILES}
    return merge(base, block.get(profile) or {})
