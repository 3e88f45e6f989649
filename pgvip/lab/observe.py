"""Watching the lab: Patroni's view of the cluster (from the client namespace), whether
the RW VIP answers, when the cluster is ready, and a status summary."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import time
import tomllib
from collections.abc import Sequence
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

from pgvip.dataplane.stale_guard import TABLE as GUARD_TABLE
from pgvip.lab import netns, processes
from pgvip.lab.base import LOG_TAIL_LINES, POLL_INTERVAL, Progress
from pgvip.lab.errors import LabError, oserror_text, user_errors
from pgvip.lab.faults import Faults
from pgvip.lab.layout import (
    PG_PORT,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    LabLayout,
)
from pgvip.lab.netns import NetnsError
from pgvip.lab.processes import ProcessId
from pgvip.lab.readiness import Readiness, assess_cluster
from pgvip.lab.state import process_key

VIP_INTERFACES = ("eth0", "lo")


def vip_holders(layout: LabLayout, vip: ipaddress.IPv4Address | str) -> list[str]:
    """The lab's nodes that have `vip` on eth0 or lo right now (one `ip addr` per node; a
    missing namespace holds nothing). The one "who holds the VIP" of the lab, the fault
    matrix and the benchmarks; the 20 ms samplers are pgvip.lab.sampler and arp_sampler."""
    address = ipaddress.IPv4Address(str(vip))
    held = []
    for node in layout.node_names():
        ns = layout.namespace(node)
        found = {a.ip for ifname in VIP_INTERFACES for a in netns.ipv4_addresses(ns, ifname)}
        if address in found:
            held.append(node)
    return held


class Observe(Faults):
    """Reading the cluster's state; it builds on Faults for process lookups."""

    # -- the Patroni view ------------------------------------------------

    @user_errors
    def members(self) -> list[dict[str, Any]]:
        """Patroni's /cluster members, from the first node that answers (client namespace)."""
        http = self._client_http()
        urls = {
            node: f"{self.layout.patroni_url(node)}/cluster" for node in self.layout.node_names()
        }
        futures = {http.submit("GET", url, timeout=1.0): node for node, url in urls.items()}
        errors: dict[str, str] = {}
        for future in concurrent.futures.as_completed(futures):
            node = futures[future]
            try:
                answer = future.result()
            except BrokenThreadPool as exc:
                raise NetnsError(f"cannot enter namespace {http.ns}: {exc}") from exc
            except OSError as exc:
                errors[node] = oserror_text(exc)
                continue
            if answer.status != 200:
                errors[node] = f"HTTP {answer.status}"
                continue
            try:
                doc = answer.json()
            except ValueError:
                errors[node] = "invalid JSON"
                continue
            for f in futures:
                f.cancel()
            return list(doc.get("members", [])) if isinstance(doc, dict) else []
        detail = ", ".join(f"{n}: {errors.get(n, '?')}" for n in self.layout.node_names())
        raise LabError(f"no Patroni REST API answered ({detail})")

    @user_errors
    def node_views(self) -> dict[str, dict[str, Any] | str]:
        """Each node's own GET /patroni answer, or why there is none (asked in parallel)."""
        http = self._client_http()
        futures = {
            node: http.submit("GET", f"{self.layout.patroni_url(node)}/patroni", timeout=1.0)
            for node in self.layout.node_names()
        }
        views: dict[str, dict[str, Any] | str] = {}
        for node, future in futures.items():
            try:
                answer = future.result()
            except BrokenThreadPool as exc:
                raise NetnsError(f"cannot enter namespace {http.ns}: {exc}") from exc
            except OSError as exc:
                views[node] = oserror_text(exc)
                continue
            try:
                doc = answer.json()
            except ValueError:
                views[node] = f"HTTP {answer.status} with invalid JSON"
                continue
            # /patroni answers 503 while PostgreSQL is not running, with the same document.
            views[node] = doc if isinstance(doc, dict) else f"HTTP {answer.status}"
        return views

    def vip_holders(self, vip: ipaddress.IPv4Address | str) -> list[str]:
        """Nodes that have `vip` now (see the module's `vip_holders`)."""
        return vip_holders(self.layout, vip)

    def leader(self) -> str | None:
        """The name of the running leader, or None (also when no Patroni answers)."""
        try:
            members = self.members()
        except LabError:
            return None
        return assess_cluster(members, self.layout.node_names()).leader

    def _etcd_healthy(self) -> bool:
        url = f"http://{self.layout.etcd_ip}:2379/health"
        try:
            doc = self._get_json(url, timeout=1.0)
        except (OSError, ValueError):
            return False
        return isinstance(doc, dict) and str(doc.get("health")) == "true"

    def rw_vip_answers(self) -> bool:
        """Does the RW VIP take SQL from the client namespace, as a primary (not in recovery)?"""
        conninfo = (
            f"host={self.layout.rw_vip} port={PG_PORT} user={SUPERUSER} "
            f"password={SUPERUSER_PASSWORD} dbname=postgres connect_timeout=2"
        )
        argv = [
            str(self.pg_bin / "psql"),
            "-X",
            "-At",
            "-c",
            "select pg_is_in_recovery()",
            conninfo,
        ]
        try:
            proc = self.run("client", argv, timeout=6, env=processes.CLEAN_ENV)
        except LabError:  # psql hung past its own connect_timeout: not answering
            return False
        return proc.returncode == 0 and proc.stdout.strip() == "f"

    def guards_missing(self) -> list[str]:
        """Nodes whose pgvip should have its stale-ARP guard (announce.reset_stale, the
        default) but has not installed it yet. Until it has, a node that forwards (an RO
        director) passes a SYN for the RW VIP on to the holder instead of resetting it."""
        missing = []
        for node in self.layout.node_names():
            try:
                doc = tomllib.loads(self.pgvip_config_path(node).read_text())
            except (OSError, tomllib.TOMLDecodeError):
                continue  # not this check's business: the daemon itself reports a bad config
            if not doc.get("announce", {}).get("reset_stale", True):
                continue
            proc = self.run(node, ["nft", "list", "table", "inet", GUARD_TABLE], timeout=5)
            if proc.returncode != 0:
                missing.append(node)
        return missing

    # -- readiness -------------------------------------------------------

    def _tails(self, components: Sequence[tuple[str, str]]) -> str:
        out = []
        for host, what in components:
            path = self.log_path(host, what)
            text = processes.tail(path, LOG_TAIL_LINES)
            if text:
                out.append(f"\n--- last lines of {path} ---\n{text}")
        return "".join(out)

    def _check_alive(self, components: Sequence[tuple[str, str]]) -> None:
        """LabError naming the first component whose recorded process is gone."""
        recorded = self.store.load().processes
        for host, what in components:
            entry = recorded.get(process_key(host, what))
            if entry is None:
                raise LabError(f"{what} on {host} was never started" + self._tails([(host, what)]))
            proc = ProcessId(entry.pid, entry.start_time)
            if not processes.is_alive(proc):
                code = processes.exit_status(proc)
                how = (
                    ""
                    if code is None
                    else (f" (killed by signal {-code})" if code < 0 else f" (exit status {code})")
                )
                raise LabError(
                    f"{what} on {host} is not running (PID {proc.pid} exited{how})"
                    + self._tails([(host, what)])
                )

    def _daemons(self) -> list[tuple[str, str]]:
        found = [("etcd", "etcd")]
        found += [(n, "patroni") for n in self.layout.node_names()]
        if self.pgvip:
            found += [(n, "pgvip") for n in self.layout.node_names()]
        return found

    @user_errors
    def wait_ready(
        self,
        *,
        timeout: float,
        progress: Progress = print,
        _t0: float | None = None,
        vip: bool = True,
    ) -> None:
        """Wait for one leader, N-1 streaming replicas and (with pgvip, unless `vip` is False,
        as in the L3 fabric where the client subnet cannot reach the VIPs) SQL through the RW
        VIP.

        Shows each change of the cluster's state; on timeout, or when a daemon dies, the error
        names what did not come up and quotes the end of its logs.
        """
        t0 = time.monotonic() if _t0 is None else _t0
        deadline = time.monotonic() + timeout
        last = ""
        while True:
            self._check_alive(self._daemons())
            try:
                readiness = assess_cluster(
                    self.members(), self.layout.node_names(), self.node_views()
                )
                summary = readiness.summary
            except LabError as exc:
                readiness = None
                summary = f"waiting for Patroni: {exc}"
            vip_ok = False
            if readiness is not None and readiness.ready:
                if not (self.pgvip and vip):
                    break
                vip_ok = self.rw_vip_answers()
                summary += "; RW VIP " + ("answers SQL" if vip_ok else "not answering yet")
                unguarded = self.guards_missing() if vip_ok else []
                if unguarded:
                    summary += f"; stale-ARP guard not yet installed on {', '.join(unguarded)}"
                elif vip_ok:
                    break
            if summary != last:
                progress(f"[{time.monotonic() - t0:5.1f}s] {summary}")
                last = summary
            if time.monotonic() >= deadline:
                raise LabError(
                    f"lab not ready after {timeout:.0f} s: {summary}"
                    + self._tails(self._culprits(readiness))
                )
            time.sleep(POLL_INTERVAL)
        progress(f"[{time.monotonic() - t0:5.1f}s] {summary}")

    def _culprits(self, readiness: Readiness | None) -> list[tuple[str, str]]:
        if readiness is None:
            if not self._etcd_healthy():
                return [("etcd", "etcd")]
            return [(n, "patroni") for n in self.layout.node_names()]
        if not readiness.ready:
            found: list[tuple[str, str]] = []
            for node in readiness.behind:
                found += [(node, "patroni"), (node, "postgres")]
            return found
        # Cluster ready but the RW VIP is not: pgvip on the leader is first to blame.
        nodes = self.layout.node_names()
        if readiness.leader:
            nodes = [readiness.leader] + [n for n in nodes if n != readiness.leader]
        return [(n, "pgvip") for n in nodes]

    # -- status ------------------------------------------------------------

    @user_errors
    def status(self) -> dict[str, Any]:
        """Namespaces, processes (alive?), Patroni members, VIP holders, partitions, log dir."""
        layout = self.layout
        existing = set(netns.list_namespaces())
        state = self.store.load() if self.store.exists() else None
        procs: dict[str, dict[str, Any]] = {}
        for key, entry in (state.processes if state else {}).items():
            alive = processes.is_alive(ProcessId(entry.pid, entry.start_time))
            procs[key] = {
                "pid": entry.pid,
                "alive": alive,
                "log": str(self.log_path(entry.host, entry.what)),
            }
        for node in layout.node_names():
            pm = self._postmaster(node) if layout.namespace(node) in existing else None
            procs[process_key(node, "postgres")] = {
                "pid": pm.pid if pm else None,
                "alive": pm is not None,
                "log": str(self.log_path(node, "postgres")),
            }
        result: dict[str, Any] = {
            "prefix": layout.prefix,
            "subnet": str(layout.subnet),
            "nodes": layout.node_names(),
            "phase": state.phase if state else None,
            "pgvip": self.pgvip,
            "log_dir": str(layout.log_dir),
            "state_file": str(layout.state_file),
            "namespaces": {ns: ns in existing for ns in layout.all_namespaces()},
            "processes": procs,
            "rw_vip": str(layout.rw_vip),
            "ro_vip": str(layout.ro_vip),
            "members": [],
            "members_error": None,
            "vip_holders": {"rw": [], "ro": []},
            "partitioned": [],
        }
        if layout.switch_ns not in existing:
            result["members_error"] = "the lab's namespaces do not exist"
            return result
        try:
            result["members"] = self.members()
        except LabError as exc:
            result["members_error"] = str(exc)
        result["vip_holders"] = {
            "rw": vip_holders(layout, layout.rw_vip),
            "ro": vip_holders(layout, layout.ro_vip),
        }
        for host in self._hosts():
            if netns.port_is_up(layout.switch_ns, layout.switch_port(host)) is False:
                result["partitioned"].append(host)
        return result
