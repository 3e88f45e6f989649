"""Log lines as journal entries with fields (`journalctl -o json` shows PGVIP_EVENT,
PGVIP_INSTANCE, ...), sent with journald's native protocol: one datagram per entry to
/run/systemd/journal/socket, each field `NAME=value\\n`, or for a value with a newline
`NAME\\n` + its length as 64-bit little-endian + the value + `\\n`.

JSON on stderr, by contrast, reaches the journal as one opaque MESSAGE.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping
from typing import IO, Any

__all__ = ["JOURNAL_SOCKET", "JournalLogger", "encode_entry", "stderr_is_journal"]

JOURNAL_SOCKET = "/run/systemd/journal/socket"
_PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2, "exception": 3}
_NOT_A_NAME = re.compile(r"[^A-Z0-9_]")


def stderr_is_journal(
    stream: IO[str] | None = None, environ: Mapping[str, str] | None = None
) -> bool:
    """systemd's test: JOURNAL_STREAM=<dev>:<inode> names the stream our stderr is, when
    systemd connected it to the journal (and not when a shell redirected it since)."""
    env = os.environ if environ is None else environ
    raw = env.get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in raw.split(":"))
        st = os.fstat((stream or sys.stderr).fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _field_name(key: str) -> str:
    return "PGVIP_" + _NOT_A_NAME.sub("_", key.upper())


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _message(event: str, fields: Mapping[str, Any]) -> str:
    """The human line: `event key=value ...`, as the console format writes it."""
    parts = [event]
    for key, value in fields.items():
        text = _text(value)
        parts.append(f"{key}={json.dumps(text) if (' ' in text or not text) else text}")
    return " ".join(parts)


def encode_entry(event_dict: Mapping[str, Any], identifier: str = "pgvip") -> bytes:
    """One journal entry: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, PGVIP_EVENT and one
    PGVIP_<KEY> field per key of the structlog event (non-strings as JSON)."""
    fields = dict(event_dict)
    event = _text(fields.pop("event", ""))
    level = str(fields.pop("level", "info"))
    fields.pop("timestamp", None)  # journald stamps every entry itself
    exception = fields.pop("exception", None)
    message = _message(event, fields)
    if exception:
        message += "\n" + str(exception)
    entry = [
        ("MESSAGE", message),
        ("PRIORITY", str(_PRIORITY.get(level, 6))),
        ("SYSLOG_IDENTIFIER", identifier),
        ("PGVIP_EVENT", event),
    ]
    entry += [(_field_name(k), _text(v)) for k, v in fields.items()]
    if exception:
        entry.append(("PGVIP_EXCEPTION", str(exception)))
    out = bytearray()
    for name, value in entry:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += name.encode() + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += name.encode() + b"=" + data + b"\n"
    return bytes(out)


class JournalLogger:
    """structlog's logger for the journal: takes the encoded entry from the last
    processor and sends it; if journald cannot take it, the line goes to `fallback`."""

    def __init__(self, address: str = JOURNAL_SOCKET, fallback: IO[str] | None = None) -> None:
        self._address = address
        self._fallback = fallback or sys.stderr
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    def msg(self, entry: bytes) -> None:
        try:
            self._sock.sendto(entry, self._address)
        except OSError as exc:
            # Too large for one datagram, or journald gone: keep the line on stderr,
            # which systemd also routes to the journal.
            text = entry.decode("utf-8", "replace").replace("\n", " | ")
            print(f"{text} (journal socket: {exc})", file=self._fallback, flush=True)

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg

    def close(self) -> None:
        self._sock.close()
