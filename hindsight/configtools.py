"""Frozen-dataclass configs from YAML and ``--set a.b=c`` overrides, with typo detection.

    cfg = from_dict(ExperimentConfig, yaml.safe_load(text))
    cfg = apply_overrides(cfg, ["learner.sac.batch_size=128", "store.num_shards=4"])
    to_dict(cfg)  # plain, YAML-ready

An unknown key is an error naming the key's full path and the nearest valid ones; a
value of the wrong type names the key, the expected type and what was given.

Ranges are declared on the field and checked by one generic function:

    @dataclasses.dataclass(frozen=True)
    class RolloutConfig:
        num_workers: int = field(2, ge=1)
        def __post_init__(self) -> None:
            check_ranges(self)   # RangeError: "rollout.num_workers: 0 is outside [1, inf)"

so a config object out of range cannot be built at all, and the error names the key's
full path once ``from_dict`` / ``apply_overrides`` add the section prefix.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Mapping, Sequence, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Range:
    """Allowed values of a numeric field: lo <= / < x <= / < hi (None: unbounded)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x: float) -> bool:
        if x != x:  # NaN is in no range
            return False
        if self.lo is not None and (x <= self.lo if self.lo_open else x < self.lo):
            return False
        return not (self.hi is not None and (x >= self.hi if self.hi_open else x > self.hi))

    def __str__(self) -> str:
        lo = "-inf" if self.lo is None else f"{self.lo:g}"
        hi = "inf" if self.hi is None else f"{self.hi:g}"
        return f"{'(' if self.lo_open or self.lo is None else '['}{lo}, {hi}{')' if self.hi_open or self.hi is None else ']'}"


class RangeError(ConfigError):
    """A value outside its field's declared range; ``key`` grows a prefix per section."""

    def __init__(self, key: str, value: Any, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}: {value!r} is outside {allowed}")

    def under(self, prefix: str) -> "RangeError":
        return RangeError(f"{prefix}.{self.key}" if prefix else self.key, self.value, self.allowed)


def field(
    default: Any = dataclasses.MISSING,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    **kwargs: Any,
) -> Any:
    """A dataclass field with a declared range (``ge``/``gt`` lower, ``le``/``lt`` upper bound).

    For a tuple/list field the range applies to every element; None is always allowed
    for an optional field.
    """
    if ge is not None and gt is not None or le is not None and lt is not None:
        raise TypeError("give at most one lower (ge/gt) and one upper (le/lt) bound")
    rng = Range(lo=gt if gt is not None else ge, hi=lt if lt is not None else le, lo_open=gt is not None, hi_open=lt is not None)
    return dataclasses.field(default=default, metadata={"range": rng}, **kwargs)


def check_ranges(obj: Any) -> None:
    """Raise RangeError for the first field of ``obj`` outside its declared ``Range``."""
    for f in dataclasses.fields(obj):
        rng = f.metadata.get("range")
        if rng is None:
            continue
        value = getattr(obj, f.name)
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v not in rng:
                raise RangeError(f.name, value, str(rng))


def field_ranges(cls: type, prefix: str = "") -> dict[str, Range]:
    """Every declared range under ``cls``, by full key (for ``hindsight config``)."""
    out: dict[str, Range] = {}
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if "range" in f.metadata:
            out[key] = f.metadata["range"]
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(field_ranges(hints[f.name], key + "."))
    return out


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _suggest(key: str, valid: Sequence[str]) -> str:
    near = difflib.get_close_matches(key, list(valid), n=3, cutoff=0.5)
    hint = f"; did you mean {' or '.join(repr(n) for n in near)}?" if near else ""
    return f"{hint} (valid keys: {', '.join(sorted(valid))})"


def _coerce(path: str, tp: Any, value: Any) -> Any:
    """Convert a YAML value to the annotated type, or raise ConfigError naming ``path``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(path, arg, value)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{path}: cannot be {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(
                f"{path}: {value!r} is not one of {', '.join(repr(a) for a in args)}"
                + _suggest(str(value), [str(a) for a in args]).split(" (valid")[0]
            )
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=path)
    if origin in (tuple, list, Sequence) or tp in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(f"{path}[{i}]", inner, v) for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (nested) mapping; unknown keys are errors."""
    data = dict(data or {})
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}" + _suggest(str(key), names))
        kwargs[key] = _coerce(path, hints[key], value)
    try:
        obj = cls(**kwargs)
    except RangeError as e:
        raise e.under(prefix) from None
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{prefix or cls.__name__}: {e}") from e
    return obj


def to_dict(cfg: Any) -> Any:
    """Dataclass tree -> plain dicts/lists (YAML-safe)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _set_path(cfg: Any, parts: list[str], raw: Any, full: str) -> Any:
    names = [f.name for f in dataclasses.fields(cfg)]
    head = parts[0]
    if head not in names:
        walked = full[: len(full) - len(".".join(parts))].rstrip(".")
        where = f"{walked}.{head}" if walked else head
        raise ConfigError(f"unknown config key {where!r}" + _suggest(head, names))
    current = getattr(cfg, head)
    if len(parts) == 1:
        value = _coerce(full, _hints(type(cfg))[head], raw)
    elif dataclasses.is_dataclass(current):
        try:
            value = _set_path(current, parts[1:], raw, full)
        except RangeError as e:  # the inner key is relative to the section
            raise e.under(head) from None
    elif isinstance(current, dict):
        value = {**current, ".".join(parts[1:]): raw}
    else:
        raise ConfigError(f"{full}: {head!r} is a value, not a section")
    return dataclasses.replace(cfg, **{head: value})


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """Apply ``a.b=c`` strings; values are parsed as YAML (``3``, ``true``, ``[64, 64]``)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.path=value")
        key, text = item.split("=", 1)
        cfg = _set_path(cfg, key.strip().split("."), yaml.safe_load(text), key.strip())
    return cfg
