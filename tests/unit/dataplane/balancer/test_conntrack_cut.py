"""The conntrack cut after a drain runs in a child process, so that pyroute2's decoding of
thousands of entries never lands in the daemon's heap (issue 14: RSS grew 3-9 MiB per cut)."""

from __future__ import annotations

import io
import json
import sys
from ipaddress import ip_address
from typing import Any

import pytest

from pgvip.dataplane.balancer import LoadBalancerError
from pgvip.dataplane.balancer import conntrack_cut as cc

A = ip_address
VIP = A("10.20.30.49")
MODULE = "pgvip.dataplane.balancer.conntrack_cut"


class FakeCommand:
    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[tuple[list[str], Any]] = []

    async def __call__(self, argv: list[str], stdin: str | None = None, **kw: Any) -> str:
        self.calls.append((argv, json.loads(stdin or "null")))
        return self.answer


async def test_the_cut_runs_in_a_child_process(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCommand('{"cut": 2}\n')
    monkeypatch.setattr(cc, "run_command", fake)
    backends = {(A("10.20.30.52"), 5432), (A("10.20.30.51"), 5433)}
    assert await cc.cut_connections(VIP, 5432, backends, netns="ns1") == 2
    [(argv, request)] = fake.calls
    assert argv == [sys.executable, "-m", MODULE]
    assert request == {
        "vip": "10.20.30.49",
        "port": 5432,
        "backends": [["10.20.30.51", 5433], ["10.20.30.52", 5432]],
        "netns": "ns1",
    }


async def test_no_backends_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeCommand('{"cut": 9}')
    monkeypatch.setattr(cc, "run_command", fake)
    assert await cc.cut_connections(VIP, 5432, set()) == 0
    assert fake.calls == []


@pytest.mark.parametrize("answer", ["", "cut 2", '{"cut": "2"}', '{"cut": true}', "[]"])
async def test_a_nonsense_answer_is_an_error(monkeypatch: pytest.MonkeyPatch, answer: str) -> None:
    monkeypatch.setattr(cc, "run_command", FakeCommand(answer))
    with pytest.raises(LoadBalancerError, match="conntrack cut answered"):
        await cc.cut_connections(VIP, 5432, {(A("10.20.30.51"), 5432)})


def test_the_child_reads_the_request_and_prints_the_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[Any] = []

    async def fake_cut(vip: Any, port: int, backends: Any, *, netns: str | None) -> int:
        seen.append((vip, port, backends, netns))
        return 3

    monkeypatch.setattr(cc, "cut_here", fake_cut)
    request = {"vip": "2001:db8::49", "port": 5432, "backends": [["2001:db8::51", 5432]]}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(request)))
    assert cc.main([]) == 0
    assert json.loads(capsys.readouterr().out) == {"cut": 3}
    assert seen == [(A("2001:db8::49"), 5432, [(A("2001:db8::51"), 5432)], None)]


@pytest.mark.parametrize("body", ["{", '{"vip": "x", "port": 1, "backends": []}', '{"port": 1}'])
def test_the_child_rejects_a_bad_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], body: str
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(body))
    assert cc.main([]) == 1
    assert "bad conntrack cut request" in capsys.readouterr().err


async def test_a_real_child_reports_its_failure() -> None:
    """End to end through a real child: a missing namespace comes back as LoadBalancerError
    with the child's own message."""
    with pytest.raises(LoadBalancerError, match="cannot end the drained backends' connections"):
        await cc.cut_connections(
            VIP, 5432, {(A("10.20.30.51"), 5432)}, netns="pgvip-test-no-such-netns"
        )
