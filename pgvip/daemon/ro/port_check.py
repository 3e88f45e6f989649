"""A TCP connect to each RO backend's PostgreSQL port (ro.port_check_interval), beside Patroni's
`/replica`.

Patroni's `/replica` keeps answering 200 for about 2 s after its own SIGTERM, while the
PostgreSQL it stops refuses connections within tens of milliseconds of its first failed one
(measured in the lab: first failure +0.50 s, "shutting down" +0.52 s, TCP refused +0.53 s
after the SIGTERM). So the director also connects to each backend's port: once per probe
round (kind "port", where "refused" is a definite no), and, between rounds, every
`port_check_interval` to the backends in rotation (`watch_ports`): the director takes a
refusing backend out at once and then runs a full round.

The connect is closed at once without a byte sent; PostgreSQL forks a backend for it that
exits without logging (an empty startup packet is not logged), but with log_connections = on
each check is one "connection received" line.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from pgvip.policy.backends import ProbeResult

__all__ = ["check_port", "port_watch", "watch_ports"]

Target = tuple[str, str, int]  # (member, host, port)


async def check_port(
    member: str, host: str, port: int, *, timeout: float, clock: Callable[[], float]
) -> ProbeResult:
    """Connect to host:port and close; ok when it connects, definitive when refused."""
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        async with asyncio.timeout(timeout):
            _reader, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return _result(member, False, f"port: {where} connect timeout after {timeout:g} s", clock)
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
    member: str, ok: bool, reason: str, clock: Callable[[], float], *, definitive: bool = False
) -> ProbeResult:
    return ProbeResult(member, ok, reason, clock(), kind="port", definitive=definitive)


async def watch_ports(
    targets: Callable[[], Sequence[Target]],
    on_refused: Callable[[ProbeResult], None],
    *,
    interval: float,
    timeout: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Every `interval`, check the ports of `targets()` (the backends in rotation; empty when
    not directing) concurrently; call `on_refused` for each refusal. Runs until cancelled;
    timeouts and other doubts are left to the probe rounds and ro.fall."""
    while True:
        current = list(targets())
        if current:
            results = await asyncio.gather(
                *(check_port(m, h, p, timeout=timeout, clock=clock) for m, h, p in current)
            )
            for r in results:
                if r.definitive:
                    on_refused(r)
        await sleep(interval)


@contextlib.asynccontextmanager
async def port_watch(
    targets: Callable[[], Sequence[Target]],
    on_refused: Callable[[ProbeResult], None],
    *,
    interval: float,
    timeout: float,
    clock: Callable[[], float],
) -> AsyncIterator[None]:
    """`watch_ports` as a task for the body's duration; nothing when `interval` is 0."""
    if interval <= 0:
        yield
        return
    task = asyncio.create_task(
        watch_ports(targets, on_refused, interval=interval, timeout=timeout, clock=clock)
    )
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
