"""pgvip.journal: the native journal protocol encoding, systemd's JOURNAL_STREAM test, and
the logger that sends one datagram per entry (to a socket of the test's own)."""

from __future__ import annotations

import io
import os
import socket
import struct
from pathlib import Path

from pgvip import journal


def parse(entry: bytes) -> dict[str, str]:
    """The reverse of the native protocol, as journald reads it."""
    fields: dict[str, str] = {}
    rest = entry
    while rest:
        line, sep, tail = rest.partition(b"\n")
        assert sep, f"entry does not end in a newline: {rest!r}"
        if b"=" in line:
            name, _, value = line.partition(b"=")
            fields[name.decode()] = value.decode()
            rest = tail
        else:
            (size,) = struct.unpack("<Q", tail[:8])
            value = tail[8 : 8 + size]
            assert tail[8 + size : 9 + size] == b"\n"
            fields[line.decode()] = value.decode()
            rest = tail[9 + size :]
    return fields


def test_an_event_becomes_fields_and_a_readable_message() -> None:
    fields = parse(
        journal.encode_entry(
            {
                "event": "transition",
                "level": "warning",
                "timestamp": "2026-12-07T12:00:00Z",
                "instance": "rw",
                "from": "BACKUP",
                "to": "MASTER",
                "reason": "priority 0 from 10.0.0.2",
                "vips": ["10.0.0.50/24"],
            }
        )
    )
    assert fields == {
        "MESSAGE": 'transition instance=rw from=BACKUP to=MASTER reason="priority 0 from '
        '10.0.0.2" vips=["10.0.0.50/24"]',
        "PRIORITY": "4",
        "SYSLOG_IDENTIFIER": "pgvip",
        "PGVIP_EVENT": "transition",
        "PGVIP_INSTANCE": "rw",
        "PGVIP_FROM": "BACKUP",
        "PGVIP_TO": "MASTER",
        "PGVIP_REASON": "priority 0 from 10.0.0.2",
        "PGVIP_VIPS": '["10.0.0.50/24"]',
    }


def test_multi_line_values_use_the_length_prefixed_form_and_names_are_sanitised() -> None:
    entry = journal.encode_entry(
        {
            "event": "reconcile failed",
            "level": "error",
            "exception": "Traceback\n  boom",
            "odd-key.x": "a\nb",
        }
    )
    assert b"MESSAGE\n" in entry  # the length-prefixed form: MESSAGE has a newline now
    fields = parse(entry)
    assert fields["PGVIP_ODD_KEY_X"] == "a\nb"
    assert fields["PGVIP_EXCEPTION"] == "Traceback\n  boom"
    assert fields["MESSAGE"].endswith("\nTraceback\n  boom")
    assert fields["PRIORITY"] == "3"


def test_stderr_is_journal_compares_device_and_inode(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w") as stream:
        st = os.fstat(stream.fileno())
        assert journal.stderr_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not journal.stderr_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:1"})
        assert not journal.stderr_is_journal(stream, {})
        assert not journal.stderr_is_journal(stream, {"JOURNAL_STREAM": "garbage"})
    assert not journal.stderr_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})


def test_the_logger_sends_one_datagram_per_entry_and_falls_back_to_stderr(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "journal.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        fallback = io.StringIO()
        logger = journal.JournalLogger(path, fallback=fallback)
        entry = journal.encode_entry({"event": "ready", "level": "info", "status": "rw MASTER"})
        logger.info(entry)
        assert parse(server.recv(65536))["PGVIP_STATUS"] == "rw MASTER"
        assert fallback.getvalue() == ""
    os.unlink(path)  # journald gone
    logger.error(entry)
    assert "PGVIP_EVENT=ready" in fallback.getvalue()
    assert "journal socket" in fallback.getvalue()
    logger.close()
