"""Checked configuration: each params.yaml block becomes a frozen dataclass.

Unknown keys and bad values fail at once, naming the key's dotted path in params.yaml and
the valid choices. A dataclass's own checks (``__post_init__``) name their key as
``<block>.<field>`` (``recipe.warmup``); ``build`` puts the path above the block in front
(``tiers.simple.recipe.warmup``).
"""

import dataclasses
import types
import typing

TOP = "params.yaml"  # how messages name the top level
PROFILES = ("demo", "course")  # the budgets a params block may override keys for


class ConfigError(ValueError):
    """A params block with an unknown key or a bad value.

    Args:
        key: the key's dotted name (empty: the top level).
        reason: what is wrong and what would be valid.
    """

    def __init__(self, key: str, reason: str):
        super().__init__(f"{key or TOP}: {reason}")
        self.key, self.reason = key, reason


def build(cls, data: dict, where: str = ""):
    """Build dataclass ``cls`` from ``data``, recursing into dataclass-typed fields.

    Args:
        cls: a frozen dataclass type.
        data: the params block (plain dict).
        where: the block's dotted name in params.yaml, for error messages ("": the top level).
    """
    if not isinstance(data, dict):
        raise ConfigError(where, f"expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(where, f"unknown key(s) {unknown}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _coerce(hints[name], value, _join(where, name)) for name, value in data.items()}
    try:
        return cls(**values)
    except TypeError as err:
        raise ConfigError(where, str(err)) from None
    except ConfigError as err:
        raise ConfigError(_qualify(where, err.key), err.reason) from None


def _join(where: str, key) -> str:
    return f"{where}.{key}" if where else str(key)


def _qualify(where: str, key: str) -> str:
    """``key`` from a check of the block at ``where``, as a dotted name from the top."""
    parent, _, block = where.rpartition(".")
    if key.split(".")[0] == block:  # named as <block>.<field>
        return _join(parent, key)
    return _join(where, key)


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
            raise ConfigError(where, f"{value!r} is not one of {list(choices)}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not _is(value, hint):
        raise ConfigError(where, f"expected {hint.__name__}, got {value!r}")
    if dict in (hint, origin):
        return _coerce_dict(typing.get_args(hint), value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(where, f"expected a list, got {value!r}")
        item = typing.get_args(hint)[0] if typing.get_args(hint) else typing.Any
        return tuple(_coerce(item, v, _join(where, i)) for i, v in enumerate(value))
    return value


def _coerce_dict(args: tuple, value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(where, f"expected a mapping, got {value!r}")
    if not args:
        return value
    key_hint, value_hint = args
    return {
        _coerce(key_hint, k, where): _coerce(value_hint, v, _join(where, k))
        for k, v in value.items()
    }


def _is(value, hint) -> bool:
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check(condition: bool, where: str, message: str) -> None:
    """Raise ConfigError(``where``, ``message``) unless ``condition``."""
    if not condition:
        raise ConfigError(where, message)


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
    override = block.get(profile) or {}
    check(
        isinstance(override, dict),
        f"{where}.{profile}",
        f"expected a mapping, got {type(override).__name__}",
    )
    base = {k: v for k, v in block.items() if k not in PROFILES}
    return merge(base, override)
