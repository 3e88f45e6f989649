"""Claims on host-global state, as abstract unix sockets: bound while held, gone with the process.

An abstract socket name is unique per network namespace, which is exactly the scope of what two
pgvip instances could fight over (addresses, nftables tables, sysctls, VRIDs). Binding one is
the claim, and the kernel drops it when the holder dies, kill -9 included, so no stale lock
file ever needs cleaning. `held()` lists the claims of every process in this namespace from
/proc/net/unix (the namespace of the reader). Names come from `pgvip.naming`.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from pgvip.naming import CLAIM_PREFIX

PROC_NET_UNIX = Path("/proc/net/unix")


class ClaimTaken(RuntimeError):
    """Another process in this network namespace holds the claim."""


class Claim:
    """One held claim; `release()` (or the process's end) gives it up."""

    def __init__(self, name: str) -> None:
        if not name.startswith(CLAIM_PREFIX):
            raise ValueError(f"not a pgvip claim: {name!r}")
        self.name = name
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.bind(b"\0" + name.encode())
        except OSError as exc:
            self._sock.close()
            self._sock = None
            if exc.errno == errno.EADDRINUSE:
                raise ClaimTaken(name) from None
            raise

    @property
    def held(self) -> bool:
        return self._sock is not None

    def release(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def held(prefix: str = CLAIM_PREFIX, *, path: Path = PROC_NET_UNIX) -> set[str]:
    """The claims starting with `prefix` that some process in this namespace holds."""
    try:
        lines = path.read_text(errors="replace").splitlines()[1:]
    except OSError:
        return set()
    found: set[str] = set()
    for line in lines:
        # Num RefCount Protocol Flags Type St Inode Path; an abstract path shows as '@name'.
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7].startswith("@" + prefix):
            found.add(fields[7][1:])
    return found


def is_held(name: str, *, path: Path = PROC_NET_UNIX) -> bool:
    return name in held(name, path=path)
