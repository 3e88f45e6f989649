"""BIRD's control socket (what `birdc` speaks): one command, its numbered reply lines, and
the session table parsed from `show protocols`. Pure parsing plus one asyncio exchange."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from pgvip.dataplane.bgp import BgpSpeakerError

REPLY_TIMEOUT = 2.0


@dataclass(frozen=True)
class Session:
    name: str
    state: str  # BIRD's protocol state: up, start, down, ...
    info: str  # for BGP: Established, Active, Connect, Idle, ...

    @property
    def established(self) -> bool:
        return self.state == "up" and self.info.startswith("Established")


def reply_done(line: str) -> bool:
    """A reply ends with a line of a 4-digit code and a space (`0000 `, `8001 ...`)."""
    return len(line) >= 5 and line[:4].isdigit() and line[4] == " "


def parse_protocols(lines: list[str]) -> tuple[Session, ...]:
    """`show protocols` rows: `1002-name proto table state since info`; later rows begin
    with a space instead of a code."""
    sessions = []
    for raw in lines:
        if raw[:4].isdigit() and raw[4:5] in ("-", " "):
            code, text = raw[:4], raw[5:]
            if code != "1002":
                continue
        elif raw.startswith(" "):
            text = raw[1:]
        else:
            continue
        fields = text.split(None, 5)
        if len(fields) < 5 or fields[1] != "BGP":
            continue
        sessions.append(Session(fields[0], fields[3], fields[5].strip() if len(fields) > 5 else ""))
    return tuple(sessions)


async def command(socket_path: str, text: str, timeout: float = REPLY_TIMEOUT) -> list[str]:
    """Send one command and return its reply lines (the banner excluded)."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(socket_path)
            try:
                await reader.readline()  # "0001 BIRD x.y.z ready."
                writer.write(text.encode() + b"\n")
                await writer.drain()
                lines: list[str] = []
                while True:
                    line = (await reader.readline()).decode(errors="replace").rstrip("\n")
                    if not line:
                        raise BgpSpeakerError(f"BIRD closed its control socket during {text!r}")
                    lines.append(line)
                    if reply_done(line):
                        return lines
            finally:
                writer.close()
    except (OSError, TimeoutError) as exc:
        why = "no answer" if isinstance(exc, TimeoutError) else str(exc)
        raise BgpSpeakerError(f"BIRD control socket {socket_path}: {why}") from None


async def sessions(socket_path: str) -> tuple[Session, ...]:
    return parse_protocols(await command(socket_path, "show protocols"))
