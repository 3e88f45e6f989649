"""Additive extensions of the netns lab for the benchmark: a proxy host namespace on the lab's
switch, and contender daemons recorded in the lab's state file, so `pgvip lab down` removes
both even when the benchmark itself was killed."""

from __future__ import annotations

import ipaddress
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from pgvip.lab import netns, processes
from pgvip.lab.cluster import Lab
from pgvip.lab.processes import ProcessId
from pgvip.lab.state import ProcessEntry, process_key

PROXY_HOST = "proxy"
PROXY_HOST_NUMBER = 20  # the seed's director addresses were .20


class LabExtError(RuntimeError):
    """The proxy namespace or a contender daemon could not be created, started or stopped."""


# -- the proxy host ----------------------------------------------------------


def host_ip(lab: Lab, number: int = PROXY_HOST_NUMBER) -> ipaddress.IPv4Address:
    return lab.layout.subnet.network_address + number


def add_host(lab: Lab, host: str = PROXY_HOST, number: int = PROXY_HOST_NUMBER) -> str:
    """Put one more host namespace (`<prefix>-<host>`, address .<number>) on the lab's switch.

    Recorded in the lab's state before it is created, like the lab's own namespaces, so that
    `pgvip lab down` removes it whatever happens to this process. Returns the namespace name.
    """
    layout = lab.layout
    ns = layout.namespace(host)
    port = layout.switch_port(host)
    if len(port) > 15:
        raise LabExtError(f"switch port name {port!r} is longer than 15 characters")
    address = ipaddress.IPv4Interface(f"{host_ip(lab, number)}/{layout.subnet.prefixlen}")
    if netns.exists(ns):
        raise LabExtError(
            f"namespace {ns} exists already; `pgvip lab down --prefix {layout.prefix}` removes it"
        )
    with lab.store.update() as state:
        if ns not in state.namespaces:
            state.namespaces.append(ns)
    try:
        netns.batch(
            [
                f"netns add {ns}",
                f"link add eth0 netns {ns} type veth peer name {port} netns {layout.switch_ns}",
            ]
        )
        netns.batch([f"link set {port} master {layout.bridge} up"], ns=layout.switch_ns)
        netns.batch(["link set lo up", f"addr add {address} dev eth0", "link set eth0 up"], ns=ns)
    except netns.NetnsError as exc:
        raise LabExtError(f"cannot add host {host} to lab {layout.prefix}: {exc}") from exc
    return ns


def remove_host(lab: Lab, host: str = PROXY_HOST) -> None:
    """Kill what runs in the host's namespace (by PID), delete it, forget it in the state."""
    ns = lab.layout.namespace(host)
    deadline = time.monotonic() + 10.0
    while netns.exists(ns):
        pids = netns.namespace_pids(ns)
        if not pids:
            break
        if time.monotonic() > deadline:
            raise LabExtError(f"processes {pids} in {ns} survived SIGKILL for 10 s")
        processes.send_pids(pids, signal.SIGKILL)
        time.sleep(0.05)
    try:
        netns.delete_namespace(ns)
    except netns.NetnsError as exc:
        raise LabExtError(str(exc)) from exc
    if lab.store.exists():
        with lab.store.update() as state:
            if ns in state.namespaces:
                state.namespaces.remove(ns)
            for key in [k for k, e in state.processes.items() if e.host == host]:
                del state.processes[key]


# -- contender daemons -------------------------------------------------------


def spawn(lab: Lab, host: str, what: str, argv: Sequence[str], *, cwd: Path | None = None) -> int:
    """Start `argv` inside the host's namespace, logging to `<log_dir>/<host>-<what>.log`.

    The process is recorded in the lab's state under `<host>/<what>` so that `pgvip lab down`
    kills it by PID. Returns the PID.
    """
    ns = lab.layout.namespace(host)
    if not netns.exists(ns):
        raise LabExtError(f"namespace {ns} does not exist")
    try:
        proc = processes.spawn(netns.exec_argv(ns, list(argv)), lab.log_path(host, what), cwd=cwd)
    except processes.ProcessError as exc:
        raise LabExtError(f"cannot start {what} on {host}: {exc}") from exc
    entry = ProcessEntry(host, what, proc.pid, proc.start_time, list(argv), time.time())
    with lab.store.update() as state:
        state.processes[entry.key] = entry
    return proc.pid


def recorded(lab: Lab, host: str, what: str) -> ProcessId | None:
    """The recorded process `<host>/<what>` if it still runs."""
    entry = lab.store.load().processes.get(process_key(host, what))
    if entry is None:
        return None
    proc = ProcessId(entry.pid, entry.start_time)
    return proc if processes.is_alive(proc) else None


def stop(lab: Lab, host: str, what: str, *, timeout: float = 10.0) -> None:
    """SIGTERM the recorded daemon and its children, SIGKILL what outlives `timeout`."""
    from benchmarks.footprint import children

    proc = recorded(lab, host, what)
    if proc is not None:
        kids = [k for pid in children(proc.pid) if (k := processes.identify(pid)) is not None]
        try:
            processes.terminate(proc, signal.SIGTERM, timeout)
        except processes.ProcessError as exc:
            raise LabExtError(f"{what} on {host}: {exc}") from exc
        for kid in processes.wait_gone(kids, 5.0):
            processes.send(kid, signal.SIGKILL)
        if processes.wait_gone(kids, 5.0):
            raise LabExtError(f"children of {what} on {host} survived SIGKILL")
    if lab.store.exists():
        with lab.store.update() as state:
            state.processes.pop(process_key(host, what), None)
