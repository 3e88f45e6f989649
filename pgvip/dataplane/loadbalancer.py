"""The RO VIP's load-balancer interface, its desired-state value types, and the `auto` choice.

Two implementations sit behind `LoadBalancer`: IPVS (`pgvip.dataplane.ipvs`) and nftables
numgen DNAT (`pgvip.dataplane.nftables`), picked by `choose_dataplane`. Only the elected
director programs its balancer; every implementation is idempotent and reads back what the
kernel really holds, so a reconcile loop can heal drift.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Protocol, runtime_checkable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# keepalived's lvs_sched / lvs_method vocabulary.
SCHEDULERS = frozenset({"rr", "wrr", "lc", "wlc", "sh", "mh"})
FORWARDING_METHODS = frozenset({"nat", "dr", "tun"})
PROTOCOLS = frozenset({"tcp"})
DATAPLANES = ("auto", "ipvs", "nftables")
COMMAND_TIMEOUT = 15.0
PROC_SYS = Path("/proc/sys")


class LoadBalancerError(RuntimeError):
    """The balancer cannot be chosen, validated, programmed or read back; the text says why."""


@dataclass(frozen=True)
class RealServer:
    address: IPAddress
    port: int
    weight: int = 1  # 0 = quiesced: no new connections, existing ones keep flowing


@dataclass(frozen=True)
class VirtualService:
    """What the director should balance. Backends are kept sorted, so equality ignores order."""

    vip: IPAddress
    port: int
    backends: tuple[RealServer, ...] = ()
    protocol: str = "tcp"
    scheduler: str = "rr"
    forwarding: str = "nat"
    persistence_timeout: int = 0  # seconds; 0 = no persistence

    def __post_init__(self) -> None:
        if not isinstance(self.vip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            raise LoadBalancerError(f"vip must be an IP address, got {self.vip!r}")
        _check_port("VIP port", self.port)
        if self.protocol not in PROTOCOLS:
            raise LoadBalancerError(f"protocol {self.protocol!r} is not supported; use 'tcp'")
        check_names(self.scheduler, self.forwarding)
        if self.persistence_timeout < 0:
            raise LoadBalancerError(
                f"persistence_timeout must be >= 0 seconds, got {self.persistence_timeout}"
            )
        seen: set[tuple[IPAddress, int]] = set()
        for rs in self.backends:
            if not isinstance(rs, RealServer):
                raise LoadBalancerError(f"backends must be RealServer values, got {rs!r}")
            if rs.address.version != self.vip.version:
                raise LoadBalancerError(
                    f"backend {rs.address} is IPv{rs.address.version} but the VIP {self.vip} "
                    f"is IPv{self.vip.version}"
                )
            _check_port(f"backend {rs.address} port", rs.port)
            if not 0 <= rs.weight <= 65535:
                raise LoadBalancerError(f"backend {rs.address} weight must be 0-65535")
            if (rs.address, rs.port) in seen:
                raise LoadBalancerError(f"backend {rs.address}:{rs.port} is listed twice")
            seen.add((rs.address, rs.port))
        ordered = tuple(sorted(self.backends, key=lambda r: (int(r.address), r.port)))
        object.__setattr__(self, "backends", ordered)

    @property
    def family(self) -> Literal[4, 6]:
        return 4 if self.vip.version == 4 else 6


class _HasBackendFields(Protocol):
    @property
    def address(self) -> IPAddress: ...
    @property
    def port(self) -> int: ...
    @property
    def weight(self) -> int: ...


def virtual_service(
    vip: IPAddress | str,
    port: int,
    backends: Iterable[_HasBackendFields],
    *,
    scheduler: str = "rr",
    forwarding: str = "nat",
    persistence_timeout: int = 0,
) -> VirtualService:
    """A VirtualService from anything with address/port/weight (e.g. the policy's `Backend`)."""
    return VirtualService(
        vip=ipaddress.ip_address(vip) if isinstance(vip, str) else vip,
        port=port,
        backends=tuple(RealServer(b.address, b.port, b.weight) for b in backends),
        scheduler=scheduler,
        forwarding=forwarding,
        persistence_timeout=persistence_timeout,
    )


@runtime_checkable
class LoadBalancer(Protocol):
    """One RO virtual service on this node (optionally inside network namespace `netns`).

    Implementations are constructed as `Impl(interface=..., netns=..., service=(vip, port))`:
    `interface` holds the VIP, `service` names the service a previous run may have left.
    """

    name: ClassVar[str]

    async def apply(self, desired: VirtualService) -> bool:
        """Make the kernel hold `desired`; idempotent. True if anything had to change."""
        ...

    async def actual(self) -> VirtualService | None:
        """What the kernel holds now (None: no pgvip service at all)."""
        ...

    async def clear(self) -> None:
        """Remove everything pgvip programmed; idempotent."""
        ...


class LoadBalancerClass(Protocol):
    """The class side of a LoadBalancer, as `choose_dataplane` returns it."""

    name: str

    def __call__(
        self,
        *,
        interface: str | None = ...,
        netns: str | None = ...,
        service: tuple[IPAddress, int] | None = ...,
    ) -> LoadBalancer: ...

    def check(self, scheduler: str, forwarding: str, persistence_timeout: int) -> None:
        """Raise LoadBalancerError if this dataplane cannot do what the config asks."""
        ...


def check_names(scheduler: str, forwarding: str) -> None:
    if scheduler not in SCHEDULERS:
        raise LoadBalancerError(
            f"unknown scheduler {scheduler!r}; use one of {', '.join(sorted(SCHEDULERS))}"
        )
    if forwarding not in FORWARDING_METHODS:
        raise LoadBalancerError(
            f"unknown forwarding method {forwarding!r}; "
            f"use one of {', '.join(sorted(FORWARDING_METHODS))}"
        )


def _check_port(what: str, port: int) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise LoadBalancerError(f"{what} must be 1-65535, got {port!r}")


# -- is there IPVS? ------------------------------------------------------------
_NETLINK_GENERIC = 16
_GENL_ID_CTRL = 0x10
_CTRL_CMD_GETFAMILY = 3
_CTRL_ATTR_FAMILY_NAME = 2
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1


def ipvs_available() -> tuple[bool, str]:
    """Ask the generic-netlink controller for the IPVS family; ENOENT means no IPVS.

    Plain stdlib netlink keeps this cheap enough for `check-config` and avoids importing
    pyroute2 just to decide not to use it. Asking may autoload the ip_vs module.
    """
    name = b"IPVS\0"
    attr = struct.pack("=HH", 4 + len(name), _CTRL_ATTR_FAMILY_NAME) + name
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("=BBH", _CTRL_CMD_GETFAMILY, 1, 0) + attr
    request = struct.pack("=IHHII", 16 + len(body), _GENL_ID_CTRL, _NLM_F_REQUEST, 1, 0) + body
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_GENERIC) as sock:
            sock.settimeout(2.0)
            sock.bind((0, 0))
            sock.send(request)
            reply = sock.recv(65536)
    except OSError as exc:
        return False, f"cannot ask generic netlink for IPVS: {exc}"
    if len(reply) < 16:
        return False, "cannot ask generic netlink for IPVS: short reply"
    _, msg_type = struct.unpack_from("=IH", reply)
    if msg_type == _GENL_ID_CTRL:
        return True, "genetlink family IPVS found"
    if msg_type == _NLMSG_ERROR and len(reply) >= 20:
        (code,) = struct.unpack_from("=i", reply, 16)
        if -code == errno.ENOENT:
            return False, "genetlink family IPVS not found"
        return False, f"genetlink lookup of IPVS failed: {errno.errorcode.get(-code, -code)}"
    return False, f"genetlink lookup of IPVS: unexpected reply type {msg_type}"


def choose_dataplane(
    requested: str,
    *,
    scheduler: str = "rr",
    forwarding: str = "nat",
    persistence_timeout: int = 0,
    probe: Callable[[], tuple[bool, str]] = ipvs_available,
    which: Callable[[str], str | None] | None = None,
) -> tuple[LoadBalancerClass, str]:
    """Pick the balancer class for `requested` ("auto", "ipvs", "nftables") and say why.

    An explicit choice the host cannot honour is an error, never a silent fallback; so is a
    scheduler/forwarding the chosen dataplane cannot do. Run at start-up.
    """
    from pgvip.dataplane.ipvs import IpvsLoadBalancer
    from pgvip.dataplane.nftables import NftablesLoadBalancer

    if requested not in DATAPLANES:
        raise LoadBalancerError(
            f"unknown dataplane {requested!r}; use one of {', '.join(DATAPLANES)}"
        )
    check_names(scheduler, forwarding)
    chosen: LoadBalancerClass
    if requested == "nftables":
        chosen, reason = NftablesLoadBalancer, "nftables requested"
    else:
        has_ipvs, detail = probe()
        if has_ipvs:
            chosen, reason = IpvsLoadBalancer, f"IPVS available: {detail}"
            if requested == "auto":
                reason += "; using IPVS"
        elif requested == "ipvs":
            raise LoadBalancerError(
                f"dataplane 'ipvs' requested but IPVS is unavailable: {detail} "
                "(load the ip_vs module, or set dataplane to 'nftables' or 'auto')"
            )
        else:
            chosen, reason = NftablesLoadBalancer, f"IPVS unavailable: {detail}; using nftables"
    if which is None:
        from pgvip.dataplane.nftables import find_nft

        def which(_name: str) -> str | None:
            return find_nft()

    if chosen is NftablesLoadBalancer and which("nft") is None:
        raise LoadBalancerError(
            f"the nftables dataplane needs the 'nft' command, which is not installed "
            f"(install the 'nftables' package) [{reason}]"
        )
    try:
        chosen.check(scheduler, forwarding, persistence_timeout)
    except LoadBalancerError as exc:
        raise LoadBalancerError(f"{exc} [{reason}]") from exc
    return chosen, reason


# -- commands and sysctls (shared by the implementations) --------------------------
async def run_command(argv: list[str], stdin: str | None = None) -> str:
    """Run argv (no shell); its stdout, or LoadBalancerError with its stderr."""
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
            text = await run_command(["ip", "netns", "exec", netns, "cat", str(proc_root / key)])
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
            await run_command(
                ["ip", "netns", "exec", netns, "tee", str(proc_root / key)], stdin=f"{value}\n"
            )
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
