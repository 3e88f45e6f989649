"""Logging set-up: structlog, JSON for journald and files, console on a TTY."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from structlog.typing import FilteringBoundLogger

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

    `fmt` is "auto" (console on a TTY, JSON otherwise), "console" or "json".
    """
    stream = stream or sys.stderr
    server_log = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _OneLineForBadRequests) for f in server_log.filters):
        server_log.addFilter(_OneLineForBadRequests())
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(**bind: Any) -> Logger:
    logger: Logger = structlog.get_logger("pgvip").bind(**bind)
    return logger
