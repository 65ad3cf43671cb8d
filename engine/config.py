"""The configuration loader: ``config.toml`` + environment + command-line overrides.

Owns how configuration is read, merged and validated, and nothing of what the sections are: the
caller hands in a ``Catalog`` (section name → settings dataclass), which the application builds
from its components and the strategy plugins (``engine.app.sections``). The type of a value comes
from its field's annotation, ranges and choices from the field's metadata
(``engine.settings.setting``); a settings class with a ``problems()`` method adds checks that span
keys.

Precedence, lowest first: the dataclass defaults, the TOML file, environment variables
``NIFTY_ENGINE__<SECTION>__<KEY>``, then ``--set section.key=value``. Every problem raises
``ConfigError`` with one line naming the key and where the bad value came from (the file, the
environment variable, or the command line). Secrets never come from a file: ``Secrets`` reads them
from the environment only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from engine.settings import setting

ENV_PREFIX = "NIFTY_ENGINE__"
DEFAULT_CONFIG_NAME = "config.toml"


class ConfigError(Exception):
    """A configuration problem, phrased as one line naming the key and the file."""

    def __init__(self, message: str, *, key: str = "", source: str = "") -> None:
        self.key = key
        self.source = source
        self.detail = message
        parts = [p for p in (source, key) if p]
        prefix = ": ".join(parts)
        super().__init__(_one_line(f"{prefix}: {message}" if prefix else message))


def _one_line(text: str) -> str:
    """Control characters (newlines included) escaped, so the message stays one line even when
    it quotes a key or value from the file."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# ---------------------------------------------------------------------------------------------
# The one section the loader itself reads: [engine] names the strategy plugins' folders
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EngineSettings:
    state_dir: str = setting("var", "directory for the database, logs and the control socket")
    strategy: str = setting("baseline_v1", "the strategy the engine runs")
    strategy_paths: tuple[str, ...] = setting((), "folders of your own strategy modules (each "
                                              "*.py file in them is searched for strategies)")
    on_signal: str = setting("keep_stops", "SIGTERM/SIGINT policy: keep stops in place, or "
                             "flatten every position", choices=("keep_stops", "flatten"))
    shutdown_timeout_s: float = setting(30.0, "how long a graceful stop may take", min=1,
                                        max=600)
    gil_switch_ms: float = setting(5.0, "paper and live: how long a busy thread may hold the "
                                   "GIL before a woken actor gets it (Python's default, 5). "
                                   "Lower cuts an actor hop's worst wait but costs throughput "
                                   "with many busy threads (a history backfill at start)",
                                   min=0.1, max=10.0)


# ---------------------------------------------------------------------------------------------
# Secrets: environment only
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Secrets:
    """Secrets read from the environment. ``repr`` never shows their values."""

    openalgo_api_key: str | None = None
    fernet_key: str | None = None
    basic_auth_user: str | None = None  # the login of a proxy in front of OpenAlgo
    basic_auth_password: str | None = None
    notify_urls: str | None = None  # apprise URLs for notices (engine.runtime.notify)

    ENV_NAMES: typing.ClassVar[dict[str, str]] = {
        "openalgo_api_key": "OPENALGO_API_KEY",
        "fernet_key": "NIFTY_ENGINE_FERNET_KEY",
        "basic_auth_user": "NIFTY_ENGINE_BASIC_AUTH_USER",
        "basic_auth_password": "NIFTY_ENGINE_BASIC_AUTH_PASSWORD",
        "notify_urls": "NIFTY_ENGINE_NOTIFY_URLS",
    }

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Secrets:
        return cls(**{f: (env.get(var) or None) for f, var in cls.ENV_NAMES.items()})

    def values(self) -> list[str]:
        """The values the log redactor masks (the proxy's user name is not one)."""
        return [v for v in (self.openalgo_api_key, self.fernet_key, self.basic_auth_password,
                            self.notify_urls) if v]

    def require(self, field_name: str, why: str) -> str:
        value = getattr(self, field_name)
        if not value:
            raise ConfigError(f"missing secret: set the environment variable "
                              f"{self.ENV_NAMES[field_name]} ({why})", key=field_name,
                              source="environment")
        return value

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={'set' if getattr(self, f) else 'unset'}" for f in self.ENV_NAMES)
        return f"Secrets({shown})"


# ---------------------------------------------------------------------------------------------
# The whole configuration
# ---------------------------------------------------------------------------------------------


#: Section name → settings dataclass.
Sections = dict[str, type]
#: What the application knows once ``[engine]`` is read: its sections for that engine settings.
Catalog = typing.Callable[[EngineSettings], Sections]
#: A problem found by ``problems()`` or a cross-section check: the key it is about (or the keys,
#: that one first, whose values disagree) and the message.
Problem = tuple[str | Sequence[str], str]
#: Checks that span sections: problems with fully dotted keys.
CrossChecks = typing.Callable[["Config"], Iterable[Problem]]


class Config:
    """The validated configuration: one attribute per section, plus where it came from."""

    def __init__(self, sections: dict[str, Any], source: str, secrets: Secrets) -> None:
        self._sections = sections
        self.source = source
        self.secrets = secrets
        for name, value in sections.items():
            setattr(self, name, value)

    def section(self, name: str) -> Any:
        return self._sections[name]

    def section_names(self) -> list[str]:
        return list(self._sections)

    def replace(self, **changes: Any) -> Config:
        """A copy with whole sections replaced (used by tests and by CLI flags)."""
        merged = dict(self._sections)
        merged.update(changes)
        return Config(merged, self.source, self.secrets)

    engine: EngineSettings  # every other section is reached as an attribute too (``cfg.risk``)


def load_config(path: str | os.PathLike[str] | None, catalog: Catalog, *,
                env: Mapping[str, str] | None = None,
                overrides: Mapping[str, str] | None = None,
                checks: CrossChecks | None = None) -> Config:
    """Read, merge and validate. ``path`` None means built-in defaults only.

    Two passes: ``[engine]`` first (it says where strategy plugins live), then every section of
    ``catalog(engine settings)``, which must include ``engine``. Each section's ``problems()``
    and then ``checks`` (problems across sections, dotted keys) are raised as ``ConfigError``
    blamed on the source of the latest-given value among the keys a problem names."""
    env = os.environ if env is None else env
    source = str(path) if path is not None else "<defaults>"
    raw: dict[str, Any] = _read_toml(Path(path)) if path is not None else {}
    first = _merge({"engine": EngineSettings}, raw, env, overrides or {}, source, only=True)
    try:
        sections = catalog(_build_all(first, {"engine": EngineSettings})["engine"])
    except ConfigError as exc:  # blame the value where it came from
        if exc.source:
            raise
        raise ConfigError(exc.detail, key=exc.key, source=first.origin(exc.key)) from None
    merged = _merge(sections, raw, env, overrides or {}, source)
    cfg = Config(_build_all(merged, sections), source, Secrets.from_env(env))
    for name in sections:
        checker = getattr(cfg.section(name), "problems", None)
        for keys, message in checker() if checker is not None else ():
            raise merged.blame(message, [f"{name}.{k}" for k in _keys(keys)])
    for keys, message in checks(cfg) if checks is not None else ():
        raise merged.blame(message, list(_keys(keys)))
    return cfg


def _keys(keys: str | Sequence[str]) -> tuple[str, ...]:
    return (keys,) if isinstance(keys, str) else tuple(keys)


def describe_defaults(sections: Sections) -> list[tuple[str, str, Any, str]]:
    """(section, key, default, help) for every setting: used to check config.toml is complete."""
    rows: list[tuple[str, str, Any, str]] = []

    def walk(instance: Any, prefix: str) -> None:
        for f in dataclasses.fields(instance):
            value = getattr(instance, f.name)
            if dataclasses.is_dataclass(value):
                walk(value, f"{prefix}.{f.name}")
                continue
            rows.append((prefix, f.name, value, f.metadata.get("help", "")))

    for name, cls in sections.items():
        walk(cls(), name)
    return rows


def default_config_path(cwd: Path | None = None) -> Path | None:
    """``./config.toml`` if present, else the one shipped beside the package, else None."""
    here = (cwd or Path.cwd()) / DEFAULT_CONFIG_NAME
    if here.is_file():
        return here
    shipped = Path(__file__).resolve().parent.parent / DEFAULT_CONFIG_NAME
    return shipped if shipped.is_file() else None


# ---------------------------------------------------------------------------------------------
# Merging
# ---------------------------------------------------------------------------------------------


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a TOML file", source=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid TOML: not UTF-8 text (byte {exc.start})",
                          source=str(path)) from None
    except ValueError as exc:  # tomllib lets int()'s digit limit through
        raise ConfigError(f"not valid TOML: {exc}", source=str(path)) from None
    except RecursionError:
        raise ConfigError("not valid TOML: nested too deeply", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror}", source=str(path)) from None


class _Merged:
    """The merged raw values per section, and where each dotted key's value came from."""

    def __init__(self, sections: Sections, default_source: str) -> None:
        self.values: dict[str, dict[str, Any]] = {name: {} for name in sections}
        self._origins: dict[str, str] = {}
        self._ranks: dict[str, int] = {}
        self._default = default_source

    def set(self, dotted: str, source: str, rank: int = 1) -> None:
        """``dotted`` was given by ``source``; ``rank``: 1 the file, 2 the environment, 3 the
        command line (the order in which they override each other)."""
        self._origins[dotted] = source
        self._ranks[dotted] = rank

    def origin(self, dotted: str) -> str:
        """The source of ``dotted``'s value, or of the nearest table above it that was set."""
        return self._origins.get(self._nearest(dotted), self._default)

    def rank(self, dotted: str) -> int:
        """How late ``dotted``'s value was given (0: a default)."""
        return self._ranks.get(self._nearest(dotted), 0)

    def _nearest(self, dotted: str) -> str:
        while dotted and dotted not in self._origins:
            dotted = dotted.rpartition(".")[0]
        return dotted

    def blame(self, message: str, keys: Sequence[str]) -> ConfigError:
        """The error for a problem among ``keys`` (the first is the one it is about): named
        after the source that gave the latest of their values (an override before the
        environment before the file), which is the one that made them disagree."""
        culprit = max(keys, key=self.rank)
        return ConfigError(message, key=keys[0], source=self.origin(culprit))


def _merge(sections: Sections, raw: dict[str, Any], env: Mapping[str, str],
           overrides: Mapping[str, str], source: str, *, only: bool = False) -> _Merged:
    """File, then environment, then overrides. ``only``: leave sections not in ``sections`` alone
    (the first pass reads ``[engine]`` before the others are known)."""
    merged = _Merged(sections, source)
    for name, table in raw.items():
        if name not in sections:
            if only:
                continue
            raise ConfigError(f"unknown section [{name}]; known: {', '.join(sorted(sections))}",
                              key=name, source=source)
        if not isinstance(table, dict):
            raise ConfigError("must be a table ([section])", key=name, source=source)
        _merge_table(table, sections[name], merged.values[name], name, source, merged)
    for var, text in env.items():
        if var.startswith(ENV_PREFIX):
            path = [p.lower() for p in var[len(ENV_PREFIX):].split("__") if p]
            if not only or path[:1] == ["engine"]:
                _set_path(path, text, sections, merged, f"environment ${var}", rank=2)
    for dotted, text in overrides.items():
        path = dotted.split(".")
        if not only or path[:1] == ["engine"]:
            _set_path(path, text, sections, merged, f"--set {dotted}", rank=3)
    return merged


def _merge_table(table: dict[str, Any], cls: type, out: dict[str, Any], prefix: str,
                 source: str, merged: _Merged) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key, value in table.items():
        dotted = f"{prefix}.{key}"
        if key not in fields:
            raise ConfigError(f"unknown key; known keys: {', '.join(sorted(fields))}",
                              key=dotted, source=source)
        if fields[key].metadata.get("secret"):
            raise ConfigError("is a secret and must come from the environment, not a file",
                              key=dotted, source=source)
        sub = hints[key]
        if dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise ConfigError("must be a table", key=dotted, source=source)
            nested = out.setdefault(key, {})
            _merge_table(value, typing.cast(type, sub), nested, dotted, source, merged)
        else:
            out[key] = value
            merged.set(dotted, source)


def _set_path(path: list[str], text: Any, sections: Sections, merged: _Merged,
              source: str, *, rank: int) -> None:
    dotted = ".".join(path)
    if len(path) < 2 or path[0] not in sections:
        raise ConfigError("unknown setting", key=dotted, source=source)
    cls: type = sections[path[0]]
    out = merged.values[path[0]]
    for part in path[1:-1]:
        hints = typing.get_type_hints(cls)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            raise ConfigError("unknown setting", key=dotted, source=source)
        cls = typing.cast(type, hints[part])
        out = out.setdefault(part, {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    key = path[-1]
    if key not in fields:
        raise ConfigError("unknown setting", key=dotted, source=source)
    hint = typing.get_type_hints(cls)[key]
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"is a table: set one of its keys ({dotted}.KEY)", key=dotted,
                          source=source)
    out[key] = _from_text(text, hint, dotted, source) if isinstance(text, str) else text
    merged.set(dotted, source, rank)


def _from_text(text: str, hint: Any, key: str, source: str) -> Any:
    """Text from the environment or the command line, read as the field's type."""
    base = _unwrap_optional(hint)
    if base is str:
        return text
    if get_origin(base) is tuple:
        return tuple(p.strip() for p in text.split(",") if p.strip())
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except (ValueError, RecursionError):  # TOMLDecodeError, int()'s digit limit, too deep
        raise ConfigError(f"cannot read {_show(text)} as {_type_name(base)}", key=key,
                          source=source) from None


# ---------------------------------------------------------------------------------------------
# Building and validating
# ---------------------------------------------------------------------------------------------


def _build_all(merged: _Merged, sections: Sections) -> dict[str, Any]:
    return {name: _build(cls, merged.values[name], name, merged) for name, cls in sections.items()}


def _build(cls: type, given: dict[str, Any], prefix: str, merged: _Merged,
           base: Any = None) -> Any:
    """An instance of ``cls`` from ``given`` values over ``base`` (or the class defaults)."""
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}"
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            kwargs[f.name] = _build(typing.cast(type, hint), given.get(f.name, {}), dotted,
                                    merged, base=field_default(f))
            continue
        if f.name not in given:
            continue
        source = merged.origin(dotted)
        value = _coerce(given[f.name], hint, dotted, source)
        _check_range(value, f.metadata, dotted, source)
        kwargs[f.name] = value
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


def field_default(f: dataclasses.Field[Any]) -> Any:
    """A dataclass field's default value (calling its factory), or None when it has none."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _unwrap_optional(hint: Any) -> Any:
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is tuple:
        return f"a list of {_type_name(get_args(hint)[0])}"
    return {int: "an integer", float: "a number", bool: "true or false",
            str: "a string"}.get(hint, str(hint))


def _coerce(value: Any, hint: Any, key: str, source: str) -> Any:
    optional = hint is not _unwrap_optional(hint)
    base = _unwrap_optional(hint)
    if value is None and optional:
        return None

    def bad() -> ConfigError:
        return ConfigError(f"expected {_type_name(base)}, got {type(value).__name__} "
                           f"{_show(value)}", key=key, source=source)

    if base is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if base is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if base is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        try:
            number = float(value)
        except OverflowError:  # an integer beyond the float range
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(f"must be a finite number, got {_show(value)}", key=key,
                              source=source)
        return number
    if base is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if get_origin(base) is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad()
        item = get_args(base)[0]
        return tuple(_coerce(v, item, f"{key}[{i}]", source) for i, v in enumerate(value))
    raise ConfigError(f"unsupported setting type {base!r}", key=key, source=source)


def _show(value: Any) -> str:
    """A value as an error message quotes it: its repr, cut short (an integer too long to
    print is described instead)."""
    try:
        text = repr(value)
    except ValueError:  # beyond Python's int-to-text digit limit
        return f"<{type(value).__name__} too large to print>"
    return text if len(text) <= 80 else text[:77] + "..."


def _check_range(value: Any, meta: Mapping[str, Any], key: str, source: str) -> None:
    if value is None:
        return
    lo, hi, choices = meta.get("min"), meta.get("max"), meta.get("choices")
    measured = len(value) if isinstance(value, tuple) else value
    if isinstance(measured, (int, float)) and not isinstance(measured, bool):
        if lo is not None and measured < lo:
            raise ConfigError(f"{_show(value)} is below the minimum {lo}", key=key,
                              source=source)
        if hi is not None and measured > hi:
            raise ConfigError(f"{_show(value)} is above the maximum {hi}", key=key,
                              source=source)
    if choices is not None:
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if item not in choices:
                raise ConfigError(f"{_show(item)} is not one of {', '.join(map(repr, choices))}",
                                  key=key, source=source)
