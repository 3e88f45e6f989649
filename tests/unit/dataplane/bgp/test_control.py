"""BIRD's control-socket replies, as captured from BIRD 2.0.12."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pgvip.dataplane.bgp import BgpSpeakerError
from pgvip.dataplane.bgp.control import Session, command, parse_protocols, reply_done

SHOW_PROTOCOLS = [
    "2002-Name       Proto      Table      State  Since         Info",
    "1002-device1    Device     ---        up     15:28:18.577  ",
    " pgvip_vips Direct     ---        up     15:28:18.577  ",
    " pgvip_peer1 BGP        ---        up     15:28:43.657  Established   ",
    " pgvip_peer2 BGP        ---        start  15:28:18.577  Active        ",
    "0000 ",
]


def test_sessions_are_the_bgp_rows() -> None:
    assert parse_protocols(SHOW_PROTOCOLS) == (
        Session("pgvip_peer1", "up", "Established"),
        Session("pgvip_peer2", "start", "Active"),
    )
    assert [s.established for s in parse_protocols(SHOW_PROTOCOLS)] == [True, False]


def test_reply_ends_on_a_code_and_a_space() -> None:
    assert reply_done("0000 ")
    assert reply_done("8001 Syntax error")
    assert not reply_done("1002-device1 ...")
    assert not reply_done(" pgvip_peer1 BGP")


def test_a_missing_socket_is_a_speaker_error(tmp_path: Path) -> None:
    with pytest.raises(BgpSpeakerError, match="control socket"):
        asyncio.run(command(str(tmp_path / "none.ctl"), "show status", timeout=0.5))


def test_a_fake_bird_answers(tmp_path: Path) -> None:
    path = str(tmp_path / "bird.ctl")

    async def main() -> list[str]:
        async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"0001 BIRD 2.0.12 ready.\n")
            assert (await r.readline()) == b"show protocols\n"
            w.write(("\n".join(SHOW_PROTOCOLS) + "\n").encode())
            await w.drain()
            w.close()

        server = await asyncio.start_unix_server(serve, path)
        async with server:
            return await command(path, "show protocols")

    assert asyncio.run(main()) == SHOW_PROTOCOLS
