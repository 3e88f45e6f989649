"""Logging set-up: structlog; journal entries with fields under systemd, JSON for files
and pipes, console on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

from pgvip import journal

# The logger every pgvip component takes: structlog's bound logger with level filtering.
Logger = FilteringBoundLogger

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class _OneLineForBadRequests(logging.Filter):
    """aiohttp logs a malformed request (garbage bytes, TLS on a plain port, a NUL in a
    header) with a full traceback. A peer's bad bytes are not our bug: keep one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            detail = " ".join(str(record.exc_info[1]).split())
            record.msg = f"{record.getMessage()}: {detail}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


def configure(fmt: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Configure structlog once for the process.

    `fmt` is "auto" (the journal when stderr is systemd's journal stream, else console on a
    TTY, else JSON), "journal", "console" or "json".
    """
    stream = stream or sys.stderr
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _OneLineForBadRequests) for f in server_log.filters):
        server_log.addFilter(_OneLineForBadRequests())
    if fmt == "auto":
        if journal.stderr_is_journal(stream):
            fmt = "journal"
        else:
            fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    factory: Any = structlog.PrintLoggerFactory(file=stream)
    if fmt == "journal":
        journal_logger = journal.JournalLogger(fallback=stream)
        factory = lambda *_: journal_logger  # noqa: E731  # one socket for every logger
        processors += [structlog.processors.format_exc_info, _encode_journal_entry]
    elif fmt == "json":
        processors += [_timestamp, structlog.processors.JSONRenderer()]
    else:
        processors += [_timestamp, structlog.dev.ConsoleRenderer(colors=False)]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )


_timestamp = structlog.processors.TimeStamper(fmt="iso", utc=True)


def _encode_journal_entry(_logger: Any, _method: str, event_dict: Any) -> bytes:
    return journal.encode_entry(event_dict)


def get_logger(**bind: Any) -> Logger:
    logger: Logger = structlog.get_logger("pgvip").bind(**bind)
    return logger
