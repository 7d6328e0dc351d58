"""Config dataclasses from YAML files plus dotted ``key=value`` overrides.

Every stage has one typed config dataclass (validated in ``__post_init__``). The CLI builds
it from (1) defaults, (2) ``--config FILE.yaml``, (3) explicit command-line options, and
(4) trailing dotted overrides such as ``train.lr=3e-4 model.hidden=128``.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from world2act import World2ActError

T = TypeVar("T")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any or tp is None:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>") or type(tp).__name__ == "UnionType":
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except (ValueError, TypeError, World2ActError):
                continue
        raise World2ActError(f"{where}: cannot interpret {value!r} as {tp}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise World2ActError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        return dict(value)
    if tp is bool:
        if isinstance(value, str):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise World2ActError(f"{where}: expected true/false, got {value!r}")
        return bool(value)
    if tp in (int, float, str):
        try:
            return tp(value)
        except (TypeError, ValueError):
            raise World2ActError(f"{where}: expected {tp.__name__}, got {value!r}") from None
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass ``cls`` from a (possibly nested) dict, coercing types.

    Raises:
        World2ActError: an unknown key (the message lists the valid ones) or a bad value.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise World2ActError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    return cls(**kwargs)


def apply_overrides(config: T, overrides: list[str], where: str = "override") -> T:
    """Return a copy of ``config`` with dotted ``a.b=value`` overrides applied.

    Raises:
        World2ActError: malformed override or unknown key.
    """
    data = dataclasses.asdict(config)
    for ov in overrides:
        if "=" not in ov:
            raise World2ActError(f"{where} {ov!r}: expected key=value (e.g. train.lr=3e-4)")
        key, raw = ov.split("=", 1)
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise World2ActError(f"{where} {ov!r}: unknown key {key!r}")
            node = node[p]
        if parts[-1] not in node:
            raise World2ActError(f"{where} {ov!r}: unknown key {key!r}; valid here: {sorted(node)}")
        node[parts[-1]] = yaml.safe_load(raw) if raw != "" else ""
    return from_dict(type(config), data, where)


def read_yaml_mapping(path: str | Path) -> dict:
    """Read a YAML config file whose top level is a mapping.

    Raises:
        World2ActError: missing file, invalid YAML, or a non-mapping top level (names the file).
    """
    p = Path(path)
    if not p.is_file():
        raise World2ActError(f"{p}: config file not found")
    try:
        loaded = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise World2ActError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise World2ActError(f"{p}: expected a mapping at the top level")
    return loaded


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
                **explicit: Any) -> T:
    """Defaults <- YAML file <- explicit keyword values (None ignored) <- dotted overrides."""
    data: dict = read_yaml_mapping(path) if path else {}
    data.update({k: v for k, v in explicit.items() if v is not None})
    cfg = from_dict(cls, data, str(path) if path else "config")
    return apply_overrides(cfg, overrides or []) if overrides else cfg
