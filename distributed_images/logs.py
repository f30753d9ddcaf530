"""Structured logs: one `key=value` line per event (logfmt), readable by people and by Loki."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else given through `extra=` is printed as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


# Characters a client may put in a path or a header are never written raw: a CR or LF would
# forge log lines, an escape sequence would drive the terminal of whoever reads them.
_NAMED = {"\\": "\\\\", '"': '\\"', "\n": "\\n"}


def _escaped(c: str) -> str:
    if c in _NAMED:
        return _NAMED[c]
    if c.isprintable():
        return c
    code = ord(c)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="') or not text.isprintable():
        return '"' + "".join(map(_escaped, text)) + '"'
    return text


def printable(text: str) -> str:
    """`text` with what would not print (control characters, bytes a file name had that were
    not UTF-8) written as escapes: a name shown to a person, in a page or a terminal."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return (
        text if text.isprintable() else "".join(c if c.isprintable() else _escaped(c) for c in text)
    )


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields |= {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        return " ".join(f"{k}={_quote(v)}" for k, v in fields.items())


LEVELS = ("debug", "info", "warning", "error")


class Throttle:
    """At most one line per `interval` seconds for what happens again and again (a tracker
    still unreachable, a disk still full): `due` counts each time, and says how many times it
    happened since the last line when a line is due."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self._times = 0
        self._logged: float | None = None

    def due(self) -> int:
        """One more time; the times since the last line if a line is due now, else 0."""
        self._times += 1
        now = time.monotonic()
        if self._logged is not None and now - self._logged < self.interval:
            return 0
        self._logged, times, self._times = now, self._times, 0
        return times

    def reset(self) -> None:
        """It stopped happening: the next time is said at once."""
        self._times, self._logged = 0, None


def parse_level(text: str) -> str:
    """`--log-level`: one of LEVELS, in any case."""
    level = text.strip().lower()
    if level not in LEVELS:
        raise ValueError(f"not a log level: {text!r} (one of {', '.join(LEVELS)})")
    return level


def level_field(default: str) -> Any:
    """A command's `--log-level` field (its `Config`'s), starting at `default`."""
    return dataclasses.field(
        default=default, metadata={"parse": parse_level, "help": ", ".join(LEVELS)}
    )


# What aiohttp says of a TLS handshake sent to a plain HTTP port.
TLS_ON_PLAIN_HTTP = "Received HTTPS traffic on an HTTP port"
TLS_REFUSED = "TLS handshake on the plain HTTP port refused (a client trying HTTPS first)"


class _MalformedRequests(logging.Filter):
    """aiohttp answers a request it cannot parse with 400, then logs it at error level with its
    traceback: a client's bad bytes are no error of this process. One line at info instead, as
    other refused requests get; at debug for a TLS handshake, which Docker and podman send first
    at every pull from a registry they are told is insecure, before they fall back to HTTP."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if type(error).__module__ != "aiohttp.http_exceptions":
            return True
        message = getattr(error, "message", "") or type(error).__name__
        level, record.msg = logging.INFO, "malformed request refused"
        if message == TLS_ON_PLAIN_HTTP:
            level, record.msg = logging.DEBUG, TLS_REFUSED
        record.levelno, record.levelname = level, logging.getLevelName(level)
        record.args = ()
        record.exc_info = record.exc_text = None
        record.error = message
        return logging.getLogger().isEnabledFor(level)


def setup(level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log repeats what our request metrics and logs already say.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.server").addFilter(_MalformedRequests())
    # grpc's own debug lines (one per call) drown ours.
    logging.getLogger("grpc").setLevel(max(root.level, logging.INFO))
