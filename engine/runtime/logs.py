"""Logging: loguru sinks (console and a rotating file), IST timestamps, and secret redaction.

Owns every log sink of the process. Each sink gets the same ``Redactor`` as its filter, which
rewrites the record before formatting: the message, the ``extra`` values and the exception text
(formatted here, because a traceback carries exception messages and URLs). Known secret values
(from the environment) are replaced literally; anything shaped like an API key assignment
(``apikey=...``, ``"api_key": "..."``, ``Authorization: Bearer ...``) is masked by pattern, so a key
never seen before is still hidden. Standard-library logging (Pykka, urllib3, websocket-client) is
routed into loguru and therefore through the same filter. ``diagnose`` is off on every sink:
variable values in tracebacks could hold a key.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from loguru import logger

from engine.runtime.clock import IST
from engine.settings import setting

MASK = "***"

_KEY_NAMES = r"(?:api[_-]?key|apikey|x-api-key|access[_-]?token|secret|password|fernet[_-]?key)"
_PATTERNS = [
    # apikey=VALUE in URLs, query strings, form bodies and "key: value" text
    re.compile(rf"(?i)(\b{_KEY_NAMES}\b\s*[=:]\s*)([^\s&,;'\"}}\]]+)"),
    # 'apikey': 'VALUE' / "api_key": "VALUE" in dict or JSON reprs
    re.compile(rf"(?i)(['\"]{_KEY_NAMES}['\"]\s*:\s*['\"])([^'\"]*)(['\"])"),
    # Authorization: Bearer VALUE
    re.compile(r"(?i)(\bbearer\s+)([A-Za-z0-9._~+/=-]+)"),
]

CONSOLE_FORMAT = ("<green>{extra[ist]}</green> | <level>{level: <8}</level> | "
                  "<cyan>{name}</cyan> | <level>{message}</level>{extra[exc_text]}")
FILE_FORMAT = "{extra[ist]} | {level: <8} | {name}:{line} | {message}{extra[exc_text]}"


class Redactor:
    """Masks secrets in text; used as the filter of every sink."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = ()
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        with self._lock:
            merged = {s for s in (*self._secrets, *secrets) if s and len(s) >= 4}
            # longest first so a secret containing another is masked whole
            self._secrets = tuple(sorted(merged, key=len, reverse=True))

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(_mask_match, text)
        return text

    def redact_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        return self.redact(repr(value))

    def __call__(self, record: Any) -> bool:
        """Loguru filter: rewrite the record in place, always let it through."""
        if record["extra"].get("_redacted"):
            return True
        record["message"] = self.redact(record["message"])
        extra = record["extra"]
        for key in list(extra):
            if key not in ("ist", "exc_text"):
                extra[key] = self.redact_value(extra[key])
        exc = record["exception"]
        if exc is not None and exc.type is not None:
            text = "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
            extra["exc_text"] = "\n" + self.redact(text).rstrip("\n")
            record["exception"] = None
        else:
            extra.setdefault("exc_text", "")
        extra["ist"] = record["time"].astimezone(IST).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        extra["_redacted"] = True
        return True


def _mask_match(m: re.Match[str]) -> str:
    tail = m.group(3) if m.lastindex and m.lastindex >= 3 else ""
    return f"{m.group(1)}{MASK}{tail}"


# The process-wide redactor: every sink added by setup_logging uses it.
REDACTOR = Redactor()


class _InterceptHandler(logging.Handler):
    """Route standard-library logging records into loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).log(level, record.getMessage())


@dataclass(frozen=True, slots=True)
class LoggingSettings:
    """Where and how much the engine logs (section ``[logging]``)."""

    level: str = setting("INFO", "console and file log level",
                         choices=("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"))
    file: str = setting("engine.log", "log file name inside state_dir ('' for no file)")
    rotation: str = setting("50 MB", "rotate the log file at this size")
    retention: int = setting(10, "rotated log files kept", min=1, max=1000)
    console: bool = setting(True, "also log to the console (stderr)")


def setup_logging(*, level: str = "INFO", log_file: Path | None = None, rotation: str = "50 MB",
                  retention: int = 10, console: bool = True, secrets: Iterable[str] = (),
                  stream: TextIO | None = None) -> Redactor:
    """Replace every loguru sink with ours; returns the redactor (add secrets to it later)."""
    REDACTOR.add(*secrets)
    logger.remove()
    logger.configure(extra={"ist": "", "exc_text": ""})
    if console:
        logger.add(stream or sys.stderr, level=level, format=CONSOLE_FORMAT, filter=REDACTOR,
                   colorize=stream is None and sys.stderr.isatty(), backtrace=False,
                   diagnose=False)
    _FILE_SINK.clear()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        options = dict(level=level, format=FILE_FORMAT, filter=REDACTOR, rotation=rotation,
                       retention=retention, encoding="utf-8", enqueue=False, backtrace=False,
                       diagnose=False)
        _FILE_SINK.append((logger.add(str(log_file), **options), log_file, options))
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    return REDACTOR


#: the file sink of ``setup_logging``: (loguru id, path, options), for ``rotate_files``
_FILE_SINK: list[tuple[int, Path, dict[str, Any]]] = []


def rotate_files() -> Path | None:
    """Start a fresh log file now (the trading day's closing does it every day); the old one
    is kept as ``<stem>.<date_time>.log``, which the sink's retention counts. Returns it."""
    if not _FILE_SINK:
        return None
    sink, path, options = _FILE_SINK.pop()
    logger.remove(sink)
    old = path.with_name(f"{path.stem}.{datetime.now(IST):%Y-%m-%d_%H-%M-%S_%f}{path.suffix}")
    if path.exists():
        path.replace(old)
    _FILE_SINK.append((logger.add(str(path), **options), path, options))
    return old if old.exists() else None


def add_sink(sink: Any, *, level: str = "DEBUG", fmt: str = FILE_FORMAT) -> int:
    """Add one more sink (tests, the status channel); it gets the same redaction filter."""
    return logger.add(sink, level=level, format=fmt, filter=REDACTOR, backtrace=False,
                      diagnose=False, colorize=False)


class Throttle:
    """Allows one event per key per interval (engine-clock seconds); counts the suppressed ones.

    Used for alert and invalid-input logging so a flood becomes one line now and then.
    """

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[Any, float] = {}
        self._suppressed: dict[Any, int] = {}

    def allow(self, key: Any, now: float) -> tuple[bool, int]:
        """(whether to emit now, how many were suppressed since the last emission)."""
        last = self._last.get(key)
        if last is None or now - last >= self.interval_s:
            self._last[key] = now
            return True, self._suppressed.pop(key, 0)
        self._suppressed[key] = self._suppressed.get(key, 0) + 1
        return False, 0
