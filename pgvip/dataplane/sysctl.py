"""Reading and setting /proc/sys values (directly or inside a netns), and those a director needs.

`SysctlKeeper` remembers what it changed so a node that stops directing puts them back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

from pgvip.dataplane.balancer import LoadBalancerError
from pgvip.dataplane.command import run_command
from pgvip.dataplane.host_claims import Claim, ClaimTaken, held
from pgvip.naming import CLAIM_PREFIX, StateNames, parse_sysctl_claim

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

    With `names` (not for another `netns`: claims live in our own namespace), each value
    this instance keeps changed is claimed (`host_claims`, the value before it in the claim's
    name), because these sysctls are shared by every pgvip instance in the namespace: a second
    instance that finds the value already set by a claimed first one claims it too, with the
    first one's old value, and restore() leaves a value alone while another instance still
    claims it. So the last instance to stop directing puts the value back, and one instance's
    clear never turns off forwarding that another still needs. A value nobody claimed when we
    first looked (set by the admin) is never touched.
    """

    def __init__(
        self,
        *,
        netns: str | None = None,
        proc_root: Path = PROC_SYS,
        names: StateNames | None = None,
    ) -> None:
        self.netns = netns
        self.proc_root = proc_root
        self.names = names if netns is None else None  # claims are of our own namespace
        self._saved: dict[str, tuple[str, str]] = {}  # key -> (value before, value we set)
        self._claims: dict[str, Claim] = {}
        self._looked: set[str] = set()  # keys found already set: others' claims looked up

    @property
    def saved(self) -> dict[str, tuple[str, str]]:
        return dict(self._saved)

    async def ensure(self, wanted: Mapping[str, str]) -> bool:
        """Apply `wanted`; True if anything had to change."""
        before = await apply_sysctls(wanted, netns=self.netns, proc_root=self.proc_root)
        for key, old in before.items():
            self._saved.setdefault(key, (old, wanted[key]))
        if self.names is not None:
            self._claim(wanted, before)
        return bool(before)

    def _claim(self, wanted: Mapping[str, str], changed: Mapping[str, str]) -> None:
        assert self.names is not None
        unseen = [k for k in wanted if k not in changed and k not in self._saved]
        unseen = [k for k in unseen if k not in self._looked]
        if unseen:
            self._looked.update(unseen)
            others = _claimed_before(self.names)
            for key in unseen:
                if key in others:  # another instance set it: adopt its value from before
                    self._saved[key] = (others[key], wanted[key])
        for key, (old, _) in self._saved.items():
            if key not in self._claims:
                # Taken: ours already (cannot happen twice). Any other failure only costs the
                # sharing: this instance then restores as it did before claims.
                with contextlib.suppress(ClaimTaken, OSError):
                    self._claims[key] = Claim(self.names.sysctl_claim(key, old))

    async def restore(self) -> None:
        for claim in self._claims.values():
            claim.release()
        self._claims.clear()
        self._looked.clear()
        if not self._saved:
            return
        still = _claimed_before(self.names) if self.names is not None else {}
        saved = {k: v for k, v in self._saved.items() if k not in still}
        if saved:
            current = await read_sysctls(list(saved), netns=self.netns, proc_root=self.proc_root)
            back = {k: old for k, (old, ours) in saved.items() if current[k] == ours}
            await apply_sysctls(back, netns=self.netns, proc_root=self.proc_root)
        self._saved.clear()  # only now: a failed restore is retried by the next clear


def _claimed_before(names: StateNames) -> dict[str, str]:
    """{sysctl key: value before} for the sysctls other pgvip instances claim now."""
    out: dict[str, str] = {}
    for claim in held(f"{CLAIM_PREFIX}sysctl/"):
        parsed = parse_sysctl_claim(claim)
        if parsed is not None and parsed[0] != names.instance:
            out.setdefault(parsed[1], parsed[2])
    return out
