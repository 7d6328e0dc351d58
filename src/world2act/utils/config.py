"""Config dataclasses: declared once, parsed from options, YAML files and dotted overrides.

Every stage has one typed config dataclass (validated in ``__post_init__``). A field declared
with :func:`opt` is also a command-line option: :func:`add_config_arguments` generates its
argparse flag from the field (name, type, help), and :func:`config_from_args` builds the
config from (1) defaults, (2) ``--config FILE.yaml``, (3) the options given, and (4) trailing
dotted overrides such as ``train.lr=3e-4 model.hidden=128``. Why a generator and not tyro or
draccus: docs/architecture.md.
"""
from __future__ import annotations

import dataclasses
import importlib
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from world2act import World2ActError

T = TypeVar("T")
SHARED = ("out", "seed", "device")  # cli.py's shared options; they fill the config field of that name


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,  # noqa: A002
        flag: str | None = None, aliases: tuple[str, ...] = (), choices: Any = None, metavar: str | None = None,
        required: bool = False) -> Any:
    """A dataclass field that is also a command-line option (``--field-name`` unless ``flag``).

    ``help`` is the ``--help`` text; a bool is a switch (``store_true``, or ``store_false`` when
    ``flag`` starts with ``--no-``); list fields take comma-separated values; ``choices`` may be
    ``"module:NAME"`` (imported when the parser is built); ``required``: must be set by the option,
    the YAML file or an override.
    """
    md = {"help": help, "flag": flag, "aliases": tuple(aliases), "choices": choices, "metavar": metavar,
          "required": required}
    return dataclasses.field(default=default, default_factory=factory, metadata=md)


def cli_fields(cls: type, prefix: str = ""):
    """``(dotted name, field, type)`` of every :func:`opt` field of ``cls``, nested dataclasses included."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from cli_fields(hints[f.name], f"{prefix}{f.name}.")
        elif "help" in f.metadata:
            yield prefix + f.name, f, hints[f.name]


def _flag(f: dataclasses.Field) -> str:
    """The option spelling of an :func:`opt` field: its ``flag`` or ``--field-name``."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def add_config_arguments(parser: Any, cls: type) -> None:
    """Add one argparse option per :func:`opt` field of ``cls`` (default None = not given)."""
    for dest, f, tp in cli_fields(cls):
        md = f.metadata
        flags = [_flag(f), *md["aliases"]]
        kw: dict[str, Any] = {"dest": dest, "default": None, "help": md["help"]}
        if tp is bool:
            kw["action"] = "store_false" if flags[0].startswith("--no-") else "store_true"
        else:
            is_list = typing.get_origin(tp) in (list, tuple)  # "a,b,c": split and typed by from_dict
            scalar = [] if is_list else [a for a in (typing.get_args(tp) or (tp,)) if a is not type(None)]
            kw["type"] = scalar[0] if len(scalar) == 1 and scalar[0] in (int, float) else str
            choices = md["choices"]
            if isinstance(choices, str):  # "module:NAME", imported only now
                mod, _, attr = choices.partition(":")
                choices = list(getattr(importlib.import_module(mod), attr))
            kw.update({"choices": choices} if choices else {}, metavar=md["metavar"] or flags[0][2:].upper().replace("-", "_"))
        parser.add_argument(*flags, **kw)


def config_from_args(cls: type[T], args: Any, overrides: list[str] | None = None, where: str = "") -> T:
    """``cls`` from a parsed command line: :func:`load_config` with ``args.config``, the options
    given (and ``--out/--seed/--device`` when ``cls`` has such a field) and ``overrides``
    (default ``args.overrides``); then every ``required`` option must be set.

    Raises:
        World2ActError: a bad file, key or value, or a required field left empty (names its option).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    given = {d: getattr(args, d, None) for d, _, _ in cli_fields(cls)}
    given.update({n: getattr(args, n, None) for n in SHARED if n in names})
    cfg = load_config(cls, getattr(args, "config", None), getattr(args, "overrides", None) if overrides is None
                      else overrides, **given)
    for dest, f, _ in cli_fields(cls):
        if f.metadata["required"] and getattr(cfg, dest) in ("", None, [], ()):  # required fields are top-level
            raise World2ActError(f"{where or cls.__name__}: {_flag(f)} is required (or {dest}: in --config)")
    return cfg


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
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if tuple in (origin, tp) else items
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
        World2ActError: an unknown key (the message lists the valid ones), a bad value or a missing
            required field.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise World2ActError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {sorted(fields)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise World2ActError(f"{where}: {e}") from None


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
    """Defaults <- YAML file <- explicit keyword values (None ignored; dotted keys are nested) <- dotted overrides."""
    data: dict = read_yaml_mapping(path) if path else {}
    for key, value in explicit.items():
        *parents, leaf = key.split(".")
        node = data
        for p in parents:
            node = node.setdefault(p, {})
        node.update({leaf: value} if value is not None else {})
    cfg = from_dict(cls, data, str(path) if path else "config")
    return apply_overrides(cfg, overrides or []) if overrides else cfg
