"""Renders ``config.toml`` from the settings declarations: every key, its default, its help line.

Owns the documented form of the configuration. ``config.toml`` at the repository root is this
module's output (``python run.py config --write-defaults config.toml``); a test checks the two are
identical, so a tunable cannot exist without its default and one-line comment in the file.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.config import Sections

HEADER = """\
# nifty-engine configuration: every tunable with its default and a one-line comment.
# Generated from the settings declarations (python run.py config --write-defaults config.toml);
# edit values freely. Secrets never go here: OPENALGO_API_KEY, NIFTY_ENGINE_FERNET_KEY and a
# proxy's NIFTY_ENGINE_BASIC_AUTH_USER / NIFTY_ENGINE_BASIC_AUTH_PASSWORD come from the
# environment. Any key can be overridden by NIFTY_ENGINE__<SECTION>__<KEY>=value or by
# --set section.key=value on the command line.
"""


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if value is None:
        raise ValueError("None has no TOML form; give the setting a concrete default")
    raise TypeError(f"no TOML form for {value!r}")


def _render_table(instance: Any, name: str, out: list[str]) -> None:
    """One ``[name]`` table from a settings instance (its values are the defaults shown)."""
    cls = type(instance)
    nested: list[tuple[str, Any]] = []
    doc = (cls.__doc__ or "").strip().splitlines()
    if doc and not doc[0].startswith(cls.__name__ + "("):
        out.append(f"# {doc[0]}")
    out.append(f"[{name}]")
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            nested.append((f.name, value))
            continue
        if f.metadata.get("secret"):
            continue
        help_text = f.metadata.get("help", "")
        if f.metadata.get("min") is not None or f.metadata.get("max") is not None:
            help_text += f" [{_fmt(f.metadata.get('min'))}..{_fmt(f.metadata.get('max'))}]"
        if f.metadata.get("choices"):
            help_text += " (" + " | ".join(map(str, f.metadata["choices"])) + ")"
        out.append(f"# {help_text}".rstrip())
        out.append(f"{f.name} = {_toml_value(value)}")
    out.append("")
    for sub_name, sub in nested:
        _render_table(sub, f"{name}.{sub_name}", out)


def _fmt(bound: Any) -> str:
    return "" if bound is None else f"{bound:g}" if isinstance(bound, float) else str(bound)


def render_config_toml(sections: Sections) -> str:
    """config.toml for ``sections`` (``engine.app.sections.catalog``: the engine's own sections
    and one per strategy found)."""
    lines: list[str] = [HEADER]
    for name, cls in sections.items():
        _render_table(cls(), name, lines)
    return "\n".join(lines).rstrip("\n") + "\n"
