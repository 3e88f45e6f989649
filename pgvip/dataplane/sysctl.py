"""Reading and setting /proc/sys values (directly or inside a netns), and those a director needs.

`SysctlKeeper` remembers what it changed so a node that stops directing puts them back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pgvip.dataplane.balancer import LoadBalancerError
from pgvip.dataplane.command import run_command

PROC_SYS = Path("/proc/sys")


async def read_sysctls(
    keys: Sequence[str], *, netns: str | None = None, proc_root: Path = PROC_SYS
) -> dict[str, str]:
    """Current values of sysctls given as paths relative to /proc/sys (e.g. net/ipv4/ip_forward).

    With `netns`, they are read inside that namespace through `ip netns exec`.
    """
    out: dict[str, str] = {}
    for key in keys:
        if netns is None:
            try:
                out[key] = (proc_root / key).read_text().strip()
            except OSError as exc:
                raise LoadBalancerError(f"cannot read sysctl {key}: {exc}") from exc
        else:
            # /proc/sys/net shows the namespace of the process that opens it.
            text = await run_command(["cat", str(proc_root / key)], netns=netns)
            out[key] = text.strip()
    return out


async def apply_sysctls(
    wanted: Mapping[str, str], *, netns: str | None = None, proc_root: Path = PROC_SYS
) -> dict[str, str]:
    """Set each sysctl that differs. Returns {key: previous value} for those it changed."""
    current = await read_sysctls(list(wanted), netns=netns, proc_root=proc_root)
    changed: dict[str, str] = {}
    for key, value in wanted.items():
        if current[key] == value:
            continue
        if netns is None:
            try:
                (proc_root / key).write_text(f"{value}\n")
            except OSError as exc:
                raise LoadBalancerError(f"cannot set sysctl {key}={value}: {exc}") from exc
        else:
            await run_command(["tee", str(proc_root / key)], stdin=f"{value}\n", netns=netns)
        changed[key] = current[key]
    return changed


def forwarding_sysctls(interface: str | None = None, family: int = 4) -> dict[str, str]:
    """The /proc/sys settings (path relative to /proc/sys -> value) a NAT director needs.

    Forwarding, because DNATed packets are routed on. For IPv4 also no ICMP redirects: a
    one-armed director forwards out of the interface the packet came in on, and a redirect
    would teach the client to bypass the director. The kernel sends one if `all` OR the
    interface says so, hence both. IPv6 has no such knob; note that forwarding=1 makes the
    kernel ignore router adverts unless accept_ra=2.
    """
    if family == 6:
        return {"net/ipv6/conf/all/forwarding": "1"}
    wanted = {"net/ipv4/ip_forward": "1", "net/ipv4/conf/all/send_redirects": "0"}
    if interface:
        if "/" in interface or interface in (".", ".."):
            raise LoadBalancerError(f"bad interface name {interface!r}")
        wanted[f"net/ipv4/conf/{interface}/send_redirects"] = "0"
    return wanted


class SysctlKeeper:
    """Sets sysctls for a director and puts back, on restore(), the ones it changed.

    A value someone changed again after us is theirs now and is left alone.
    """

    def __init__(self, *, netns: str | None = None, proc_root: Path = PROC_SYS) -> None:
        self.netns = netns
        self.proc_root = proc_root
        self._saved: dict[str, tuple[str, str]] = {}  # key -> (value before, value we set)

    @property
    def saved(self) -> dict[str, tuple[str, str]]:
        return dict(self._saved)

    async def ensure(self, wanted: Mapping[str, str]) -> bool:
        """Apply `wanted`; True if anything had to change."""
        before = await apply_sysctls(wanted, netns=self.netns, proc_root=self.proc_root)
        for key, old in before.items():
            self._saved.setdefault(key, (old, wanted[key]))
        return bool(before)

    async def restore(self) -> None:
        if not self._saved:
            return
        current = await read_sysctls(list(self._saved), netns=self.netns, proc_root=self.proc_root)
        back = {k: old for k, (old, ours) in self._saved.items() if current[k] == ours}
        await apply_sysctls(back, netns=self.netns, proc_root=self.proc_root)
        self._saved.clear()
