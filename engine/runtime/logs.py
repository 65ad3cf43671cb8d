"""Logging: loguru sinks (console and a rotating file), IST timestamps, and secret redaction.

Owns every log sink of the process. Each sink gets the same ``Redactor`` as its filter, which
rewrites the record before formatting: the message, the ``extra`` values and the exception text
(formatted here, because a traceback carries exception messages and URLs). Known secret values
(from the environment) are replaced literally; anything shaped like an API key assignment
(``apikey=...``, ``"api_key": "..."``, ``Authorization: Bearer ...``, ``Authorization: Basic ...``)
is masked by pattern, so a key or a proxy login never seen before is still hidden.
Standard-library logging (Pykka, urllib3, websocket-client) is routed into loguru and therefore
through the same filter. ``diagnose`` is off on every sink:
variable values in tracebacks could hold a key.

Lines are stamped with the engine's clock once one is running (``use_clock``): market time (IST)
in replay and paper, the wall clock in live. The console sink writes through a live progress bar
when one is shown (``console_over``), so lines scroll above the bar instead of over it
(docs/operations/console.md).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from loguru import logger

# loguru's rotating file sink itself, so the log file rotates exactly as ``logger.add(path)``
# would rotate it; ``GuardedFile`` wraps it (a private module of loguru: pinned by a test)
from loguru._file_sink import FileSink

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
    # Authorization: Basic VALUE (header lines and header dicts; "basic auth" text stays)
    re.compile(r"(?i)(\bauthorization['\"]?\s*[:=]\s*['\"]?basic\s+)([A-Za-z0-9+/=]+)"),
]

CONSOLE_FORMAT = ("<green>{extra[ist]}</green> | <level>{level: <8}</level> | "
                  "<level>{message}</level>{extra[exc_text]}")
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
        extra["ist"] = _stamp(record)
        extra["_redacted"] = True
        return True


def _mask_match(m: re.Match[str]) -> str:
    tail = m.group(3) if m.lastindex and m.lastindex >= 3 else ""
    return f"{m.group(1)}{MASK}{tail}"


# The process-wide redactor: every sink added by setup_logging uses it.
REDACTOR = Redactor()

# The clock lines are stamped with (the running engine's; None: the record's wall time).
_clock: Callable[[], float] | None = None


def _stamp(record: Any) -> str:
    clock = _clock
    when = datetime.fromtimestamp(clock(), IST) if clock is not None \
        else record["time"].astimezone(IST)
    return when.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@contextlib.contextmanager
def use_clock(clock: Callable[[], float]) -> Iterator[None]:
    """Stamp log lines with ``clock`` (an engine clock's ``time``) while the block runs."""
    global _clock
    previous, _clock = _clock, clock
    try:
        yield
    finally:
        _clock = previous


class ConsoleSink:
    """The console: stderr, or the rich console of a live progress bar while one is shown, so a
    line prints above the bar and the bar is redrawn below it (rich's ``Live`` does that for
    what goes through its console; a write straight to stderr would land on the bar's line)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._over: Any = None  # rich.console.Console of the live bar

    def write(self, message: str) -> None:
        over = self._over
        if over is not None:
            from rich.text import Text

            over.print(Text.from_ansi(message.rstrip("\n")), soft_wrap=True)
            return
        stream = self._stream or sys.stderr
        stream.write(message)
        stream.flush()


CONSOLE = ConsoleSink()


@contextlib.contextmanager
def console_over(console: Any) -> Iterator[None]:
    """Send console lines through ``console`` (a rich Console showing a live bar) meanwhile."""
    previous, CONSOLE._over = CONSOLE._over, console
    try:
        yield
    finally:
        CONSOLE._over = previous


def live_bar(progress: Any) -> contextlib.ExitStack:
    """``progress`` (a rich ``Progress``) shown, with log lines printed above it, until the
    returned stack is closed (``close()`` or ``__exit__``)."""
    stack = contextlib.ExitStack()
    stack.enter_context(progress)
    stack.enter_context(console_over(progress.console))
    return stack


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
    console_level: str = setting("", "console log level when not `level` ('' = the same; "
                                 "-v sets DEBUG, -q WARNING)",
                                 choices=("", "TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING",
                                          "ERROR"))
    file: str = setting("engine.log", "log file name inside state_dir ('' for no file)")
    rotation: str = setting("50 MB", "rotate the log file at this size")
    retention: int = setting(10, "rotated log files kept", min=1, max=1000)
    console: bool = setting(True, "also log to the console (stderr)")

    def problems(self) -> list[tuple[str, str]]:
        """The rotation as loguru will read it (a bad one would fail only once logging starts)."""
        problem = rotation_problem(self.rotation)
        return [("rotation", problem)] if problem else []


def setup_logging(*, level: str = "INFO", log_file: Path | None = None, rotation: str = "50 MB",
                  retention: int = 10, console: bool = True, secrets: Iterable[str] = (),
                  stream: TextIO | None = None, console_level: str | None = None) -> Redactor:
    """Replace every loguru sink with ours; returns the redactor (add secrets to it later).
    ``console_level`` (``-q``/``-v``) overrides ``level`` on the console only."""
    REDACTOR.add(*secrets)
    logger.remove()
    logger.configure(extra={"ist": "", "exc_text": ""})
    if console:
        CONSOLE._stream = stream
        logger.add(CONSOLE, level=console_level or level, format=CONSOLE_FORMAT,
                   filter=REDACTOR, colorize=stream is None and sys.stderr.isatty(),
                   backtrace=False, diagnose=False)
    _FILE_SINK.clear()
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        guard = GuardedFile(log_file, rotation=rotation, retention=retention)
        _FILE_SINK.append(guard)
        logger.add(guard, level=level, format=FILE_FORMAT, filter=REDACTOR, colorize=False,
                   backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.WARNING, force=True)
    return REDACTOR


def rotation_problem(rotation: str) -> str | None:
    """Why loguru would refuse ``rotation`` (or rotate on every line), or None when it reads it
    as a size, a duration, a frequency or a time of day."""
    try:
        check = FileSink._make_rotation_function(rotation)
    except (ValueError, TypeError) as exc:
        return f"{rotation!r} is not a size ('50 MB'), a duration ('1 day'), a frequency " \
               f"('daily') or a time ('00:00'): {exc}"
    limit = getattr(check, "keywords", {}).get("size_limit")
    if limit is not None and not 0 < limit < math.inf:
        return f"{rotation!r}: a size must be positive and finite"
    return None


class GuardedFile:
    """The log file (loguru's own rotating file sink) behind a guard: a write that fails (disk
    full, file system gone read-only) is reported once on stderr, the failures after it only
    counted, and when writing works again one line says how many lines were lost. Loguru would
    otherwise print a traceback to stderr for every line it could not write."""

    def __init__(self, path: Path, *, rotation: str, retention: int) -> None:
        self.path = path
        self._rotation, self._retention = rotation, retention
        self._sink = FileSink(str(path), rotation=rotation, retention=retention,
                              encoding="utf-8")
        self._lock = threading.Lock()
        self.lost = 0

    def write(self, message: Any) -> None:
        with self._lock:
            try:
                if self.lost:  # stamped with the time of the line that got through
                    stamp = getattr(message, "record", {}).get("extra", {}).get("ist", "")
                    self._sink.write(f"{stamp} | WARNING  | {__name__} | the log file could "
                                     f"not be written for a while: {self.lost} line(s) lost\n")
                self._sink.write(message)
            except OSError as exc:
                if not self.lost:
                    _stderr_line(f"logging: cannot write {self.path} ({exc.strerror or exc}); "
                                 f"lines are lost until it can (counted)")
                self.lost += 1
                return
            if self.lost:
                _stderr_line(f"logging: {self.path} is writable again; {self.lost} line(s) "
                             f"were lost")
                self.lost = 0

    def rotate_now(self) -> Path | None:
        """Close the file, keep it as ``<stem>.<date_time><suffix>``, start a fresh one."""
        with self._lock:
            with contextlib.suppress(OSError):
                self._sink.stop()
            old = self.path.with_name(
                f"{self.path.stem}.{datetime.now(IST):%Y-%m-%d_%H-%M-%S_%f}{self.path.suffix}")
            try:
                self.path.replace(old)
            except OSError:
                old = None
            self._sink = FileSink(str(self.path), rotation=self._rotation,
                                  retention=self._retention, encoding="utf-8")
            return old

    def stop(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._sink.stop()


def _stderr_line(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):  # stderr itself may be gone
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


#: the file sink of ``setup_logging``, for ``rotate_files``
_FILE_SINK: list[GuardedFile] = []


def rotate_files() -> Path | None:
    """Start a fresh log file now (the trading day's closing does it every day); the old one
    is kept as ``<stem>.<date_time>.log``, which the sink's retention counts. Returns it."""
    return _FILE_SINK[-1].rotate_now() if _FILE_SINK else None


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


class RepeatGate:
    """Lets the first occurrence of a key through, then repeats of it only at growing intervals
    (``first_s``, then doubling up to ``max_s``; engine-clock seconds); counts the ones held back.

    Used where one failure repeats on every retry (a refused key, a broker that stays down): the
    operator hears of it at once, then again now and then, never on every retry.
    """

    def __init__(self, first_s: float, max_s: float) -> None:
        self.first_s = first_s
        self.max_s = max(first_s, max_s)
        self._next: dict[Any, tuple[float, float]] = {}  # key -> (next allowed, interval)
        self._held: dict[Any, int] = {}

    def allow(self, key: Any, now: float) -> tuple[bool, int]:
        """(whether to emit now, how many were held back since the last emission)."""
        due = self._next.get(key)
        if due is None:
            self._next[key] = (now + self.first_s, self.first_s)
            return True, 0
        at, interval = due
        if now >= at:
            interval = min(interval * 2, self.max_s)
            self._next[key] = (now + interval, interval)
            return True, self._held.pop(key, 0)
        self._held[key] = self._held.get(key, 0) + 1
        return False, 0

    def forget(self, key: Any) -> None:
        """The failure is over: its next occurrence is news again."""
        self._next.pop(key, None)
        self._held.pop(key, None)
