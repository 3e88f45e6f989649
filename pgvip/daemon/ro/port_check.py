"""A TCP connect to each RO backend's PostgreSQL port (ro.port_check_interval), beside Patroni's
`/replica`.

Patroni's `/replica` keeps answering 200 for about 2 s after its own SIGTERM, while the
PostgreSQL it stops refuses connections within tens of milliseconds of its first failed one
(measured in the lab: first failure +0.50 s, "shutting down" +0.52 s, TCP refused +0.53 s
after the SIGTERM). So the director also connects to each backend's port: once per probe
round (kind "port", where "refused" is a definite no), and, between rounds, every
`port_check_interval` to the backends in rotation (`watch_ports`): the director takes a
refusing backend out at once, and one that leaves UNANSWERED_LIMIT connects in a row
unanswered (its host is gone), and then runs a full round.

The connect is closed at once without a byte sent; PostgreSQL forks a backend for it that
exits without logging (an empty startup packet is not logged), but with log_connections = on
each check is one "connection received" line.

The director's own PostgreSQL is watched more closely, for free (`watch_local`): every
LOCAL_INTERVAL it asks the kernel whether a socket listens on that port (sock_diag, no
connection, no fork), and only when none does, connects to confirm the refusal. So a director
whose PostgreSQL stops sees it within 20 ms, not within `port_check_interval`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

from pgvip.dataplane.tcp_listeners import Listener, ListenersError, listening_ports, serves
from pgvip.policy.backends import ProbeResult

__all__ = [
    "LOCAL_INTERVAL",
    "UNANSWERED_LIMIT",
    "WATCH_TIMEOUT",
    "check_port",
    "port_watch",
    "watch_local",
    "watch_ports",
]

Target = tuple[str, str, int]  # (member, host, port)
# How often the director asks the kernel whether its own PostgreSQL still listens.
LOCAL_INTERVAL = 0.02
# The port watch's connect deadline (at most ro.probe_timeout). On a LAN a SYN+ACK takes well
# under a millisecond, and the kernel sends it even while PostgreSQL is busy; this many
# unanswered connects in a row mean the host is gone (a power cut, a cable), and its backend
# leaves at once: new connections to it would only wait out their connect timeouts.
WATCH_TIMEOUT = 0.3
UNANSWERED_LIMIT = 2
# A timed-out connect counts as unanswered only if the check did not take this many times
# its deadline (more means this process was starved, not that the host is gone).
LATE_FACTOR = 2.0


def _where(host: str, port: int) -> str:
    return f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"


async def check_port(
    member: str, host: str, port: int, *, timeout: float, clock: Callable[[], float]
) -> ProbeResult:
    """Connect to host:port and close; ok when it connects, definitive when refused."""
    where = _where(host, port)
    started = clock()
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        waited = clock() - started
        if waited > LATE_FACTOR * timeout:
            # The event loop woke us long after the deadline: a starved process (a loaded
            # host, a slow VM), whose answer may sit unread behind the timer. Not "no answer".
            reason = (f"port: {where} connect not confirmed: the check ran {waited:.2f} s "
                      f"for a {timeout:g} s deadline (this process was starved)")  # fmt: skip
            return _result(member, False, reason, clock)
        reason = f"port: {where} connect timeout after {timeout:g} s"
        return _result(member, False, reason, clock, timed_out=True)
    except ConnectionRefusedError:
        return _result(
            member, False, f"port: {where} refused (PostgreSQL not listening)", clock,
            definitive=True,
        )  # fmt: skip
    except OSError as exc:  # unreachable, no route: a doubt (the network, not the member)
        reason = f"port: {where} {exc.strerror or type(exc).__name__}"
        return _result(member, False, reason, clock)
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        async with asyncio.timeout(timeout):
            await writer.wait_closed()
    return _result(member, True, f"port: {where} accepts", clock)


def _result(
    member: str,
    ok: bool,
    reason: str,
    clock: Callable[[], float],
    *,
    definitive: bool = False,
    timed_out: bool = False,
) -> ProbeResult:
    return ProbeResult(
        member, ok, reason, clock(), kind="port", definitive=definitive, timed_out=timed_out
    )


async def watch_ports(
    targets: Callable[[], Sequence[Target]],
    on_refused: Callable[[ProbeResult], None],
    *,
    interval: float,
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    check: Callable[..., Awaitable[ProbeResult]] = check_port,
    local: Callable[[], Sequence[Target]] = list,
) -> None:
    """Every `interval`, check the ports of `targets()` (the backends in rotation; empty when
    not directing) concurrently; call `on_refused` for each refusal, and for a backend whose
    connects went unanswered UNANSWERED_LIMIT times in a row, unless it is this node's own
    (`local()`): a connect to ourselves that times out means a starved host, not a gone one,
    and `watch_local` watches it anyway. Runs until cancelled; other doubts (no route, a
    reset) are left to the probe rounds and ro.fall."""
    unanswered: dict[tuple[str, str, int], int] = {}
    while True:
        current = list(targets())
        if current:
            results = await asyncio.gather(
                *(check(m, h, p, timeout=timeout, clock=clock) for m, h, p in current)
            )
            ours = set(local())
            for target, r in zip(current, results, strict=True):
                silent = not r.ok and r.timed_out and target not in ours
                unanswered[target] = unanswered.get(target, 0) + 1 if silent else 0
                if r.definitive:
                    on_refused(r)
                elif unanswered[target] >= UNANSWERED_LIMIT:
                    member, host, port = target
                    reason = (
                        f"port: {_where(host, port)} no answer to {unanswered[target]} "
                        f"connects in a row ({timeout:g} s each): host unreachable"
                    )
                    on_refused(_result(member, False, reason, clock, definitive=True))
                    unanswered[target] = 0
        for gone in set(unanswered) - set(current):
            del unanswered[gone]
        await sleep(interval)


async def watch_local(
    targets: Callable[[], Sequence[Target]],
    on_refused: Callable[[ProbeResult], None],
    *,
    timeout: float,
    clock: Callable[[], float],
    log: Any,
    interval: float = LOCAL_INTERVAL,
    listeners: Callable[[], list[Listener]] = listening_ports,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Every `interval`, for `targets()` (this node's own PostgreSQL while it is in rotation):
    if the kernel shows no socket listening on its address and port, connect to confirm and
    call `on_refused` on a refusal. Returns (leaving the slower `watch_ports` on its own) if
    the socket table cannot be read, or if a connect succeeds where no listener was seen: the
    table does not show this PostgreSQL (a listener in another namespace?), so it proves
    nothing here."""
    while True:
        current = list(targets())
        found: list[Listener] | None = None
        for member, host, port in current:
            try:
                found = listeners() if found is None else found
            except ListenersError as exc:
                log.warning("RO: cannot read the kernel's listening sockets; this node's "
                            "PostgreSQL is checked every ro.port_check_interval only",
                            error=str(exc))  # fmt: skip
                return
            if serves(found, ipaddress.ip_address(host), port):
                continue
            result = await check_port(member, host, port, timeout=timeout, clock=clock)
            if result.definitive:
                on_refused(result)
            elif result.ok:
                log.warning("RO: no listening socket seen for this node's PostgreSQL, yet it "
                            "accepts; it is checked every ro.port_check_interval only",
                            member=member, port=port)  # fmt: skip
                return
        await sleep(interval)


@contextlib.asynccontextmanager
async def port_watch(
    targets: Callable[[], Sequence[Target]],
    on_refused: Callable[[ProbeResult], None],
    *,
    interval: float,
    timeout: float,
    clock: Callable[[], float],
    local: Callable[[], Sequence[Target]] = list,
    log: Any = None,
) -> AsyncIterator[None]:
    """`watch_ports` (and `watch_local` for the `local` targets) as tasks for the body's
    duration; nothing when `interval` is 0."""
    if interval <= 0:
        yield
        return
    watch_timeout = min(timeout, WATCH_TIMEOUT)
    tasks = [asyncio.create_task(
        watch_ports(targets, on_refused, interval=interval, timeout=watch_timeout, clock=clock,
                    local=local)
    )]  # fmt: skip
    if log is not None:
        tasks.append(asyncio.create_task(
            watch_local(local, on_refused, timeout=timeout, clock=clock, log=log)
        ))  # fmt: skip
    try:
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
