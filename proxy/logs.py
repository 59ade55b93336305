"""The gateway's log: one line per record on stderr, as text for people or as JSON for
pipelines (`log_format`, `--log-format`; docs/configuration.md lists the keys).

A JSON line always has `ts`, `level`, `logger` and `message`, and `event`, `session`,
`identity`, `target` and `client` where they are known. A session names itself for
every record logged while it runs (`bind`, a context variable: each session is its own
asyncio task, so another session's records never carry its names), and its own records
pass them as `extra` (`session_fields`). Addresses are host:port in both formats, an
IPv6 host in brackets ([::1]:5432).

Nothing here decides what is safe to log: the code that logs never passes a token, a
password or a bind parameter (tests/test_cli.py checks the log of a login, a failed
login and a credential mint for them).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from types import MappingProxyType
from typing import IO, Any

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
#: The keys a record may carry beyond the four every JSON line has, in output order.
CONTEXT_KEYS = ("event", "session", "identity", "target", "client", "worker")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_bound: ContextVar[Mapping[str, str]] = ContextVar(
    "airlock_log_fields", default=MappingProxyType({})
)


def host_port(address: tuple[str, int] | None) -> str:
    """An address as host:port, an IPv6 host in brackets: "[::1]:5432"; "-" for none."""
    if address is None:
        return "-"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(**fields: str | None) -> None:
    """Name the session, identity, target or client for every record logged from the
    running task from now on (and from the tasks it starts). None leaves a name as is."""
    _bound.set({**_bound.get(), **{k: v for k, v in fields.items() if v is not None}})


def parse_level(text: str) -> str:
    """A log level's canonical name; ValueError naming the choices otherwise."""
    level = text.strip().upper()
    if level == "WARN":
        level = "WARNING"
    if level not in LOG_LEVELS:
        raise ValueError(f"unknown log level {text!r} (use {', '.join(LOG_LEVELS)})")
    return level


def parse_format(text: str) -> str:
    """A log format's name ("text" or "json"); ValueError naming the choices otherwise."""
    name = text.strip().lower()
    if name not in LOG_FORMATS:
        raise ValueError(f"unknown log format {text!r} (use {' or '.join(LOG_FORMATS)})")
    return name


class _BoundFields(logging.Filter):
    """Copies the running task's bound names onto each record it does not name itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _bound.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line, with stable keys."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False)


_HANDLER_NAME = "airlock"


def configure(
    level: str = "INFO",
    log_format: str = "text",
    stream: IO[str] | None = None,
    *,
    worker: int | None = None,
) -> None:
    """Send the log to `stream` (stderr) at `level`, as `log_format`; again to change
    either (the config's log_format is known only once the file is read). `worker`: this
    process is worker N of `airlock serve --workers` (its lines say so, and its pid)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.addFilter(_BoundFields())
    if worker is not None:
        bind(worker=f"{worker} pid {os.getpid()}")
    if parse_format(log_format) == "json":
        handler.setFormatter(JsonFormatter())
    elif worker is not None:
        named = f"%(name)s [worker {worker} pid {os.getpid()}]"
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.replace("%(name)s", named)))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(parse_level(level))
