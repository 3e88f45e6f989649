"""Running the commands the dataplanes need (nft, `ip netns exec`): no shell, bounded time."""

from __future__ import annotations

import asyncio

from pgvip.dataplane.balancer import LoadBalancerError

COMMAND_TIMEOUT = 15.0


async def run_command(
    argv: list[str], stdin: str | None = None, *, netns: str | None = None
) -> str:
    """Run argv (no shell), inside namespace `netns` through `ip netns exec` if given; its
    stdout, or LoadBalancerError with its stderr."""
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as exc:
        name = str(exc.filename or argv[0])
        hint = " (install the 'nftables' package)" if name.endswith("nft") else ""
        raise LoadBalancerError(f"cannot run {name!r}: not found{hint}") from exc
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(stdin.encode() if stdin is not None else None), COMMAND_TIMEOUT
        )
    except TimeoutError as exc:
        proc.kill()
        await proc.wait()
        raise LoadBalancerError(f"{' '.join(argv)} did not finish in {COMMAND_TIMEOUT} s") from exc
    if proc.returncode != 0:
        detail = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise LoadBalancerError(f"{' '.join(argv)} failed: {detail}")
    return out.decode()
