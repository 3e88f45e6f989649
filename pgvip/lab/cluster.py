"""The lab's lifecycle: build a Patroni cluster (etcd, N nodes, optionally pgvip) in network
namespaces, wait until it is ready, break it on purpose, repair it, and tear it down.

The CLI (`pgvip lab ...`) and the pytest fixture both drive this one class. Patroni's REST
API is queried over HTTP from the client namespace by worker threads that setns() into it,
which needs no curl and makes no process per poll.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pwd
import shutil
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from pgvip.lab import netns, preflight, processes, render
from pgvip.lab.base import Progress
from pgvip.lab.errors import LabError, user_errors
from pgvip.lab.layout import (
    LAB_ROOT,
    LabLayout,
    LayoutError,
)
from pgvip.lab.netns import NetnsError
from pgvip.lab.observe import Observe
from pgvip.lab.processes import ProcessId
from pgvip.lab.state import LabState, StateError, StateStore


class Lab(Observe):
    """One lab: its layout, the state file that records it, and the operations on it.

    Layered by concern: LabBase (layout, paths, commands in namespaces), Faults (processes,
    the network, switchover), Observe (Patroni view, readiness, status), and here the
    lifecycle: load, up, reset, down.
    """

    # -- construction from the state file --------------------------------

    @classmethod
    def load(cls, prefix: str = "pgvip", root: Path | str = LAB_ROOT) -> Lab:
        """The lab recorded under `root/prefix`; LabError if there is none."""
        path = Path(root) / prefix / "state.json"
        try:
            state = StateStore(path).load()
        except StateError as exc:
            if not path.exists():
                raise LabError(
                    f"no lab with prefix {prefix!r} (no state file {path}); "
                    f"start one with `pgvip lab up --prefix {prefix}`"
                ) from exc
            raise LabError(str(exc)) from exc
        try:
            layout = LabLayout.create(
                prefix=state.prefix, subnet=state.subnet, nodes=state.nodes, root=Path(root)
            )
        except LayoutError as exc:
            raise LabError(f"{path} describes an invalid lab: {exc}") from exc
        return cls(
            layout,
            pgvip=state.pgvip,
            pg_bin=state.pg_bin,
            pgvip_overrides=state.pgvip_overrides,
        )

    # -- up --------------------------------------------------------------

    @user_errors
    def up(self, *, timeout: float = 90.0, progress: Progress = print) -> None:
        """Build the lab and return once it is ready (see `wait_ready`).

        On failure the lab is left as it is for inspection; `down()` removes it.
        """
        started = time.monotonic()
        layout = self.layout
        preflight.check_all(layout, pg_bin=self.pg_bin, venv_bin=self.venv_bin, pgvip=self.pgvip)

        # Leftovers of an earlier lab with this prefix (its logs) would confuse this one's.
        if layout.base_dir.exists():
            shutil.rmtree(layout.base_dir)
        layout.base_dir.mkdir(parents=True, mode=0o755)
        layout.root.chmod(0o755)
        state = LabState(
            prefix=layout.prefix,
            subnet=str(layout.subnet),
            nodes=layout.nodes,
            root=str(layout.root),
            pgvip=self.pgvip,
            pg_bin=str(self.pg_bin),
            pgvip_overrides=self.pgvip_overrides,
            phase="creating",
        )
        me = processes.identify(os.getpid())
        if me is not None:
            state.owner_pid, state.owner_start_time = me.pid, me.start_time
        self.store.save(state)
        try:
            self._build(progress, started)
            with self.store.update() as state:
                state.phase = "starting"
            self.start("etcd", "etcd")
            self._wait_etcd(started + timeout, progress, started)
            for node in layout.node_names():
                self.start(node, "patroni")
            if self.pgvip:
                for node in layout.node_names():
                    self.start(node, "pgvip")
            remaining = max(1.0, timeout - (time.monotonic() - started))
            self.wait_ready(timeout=remaining, progress=progress, _t0=started)
        except BaseException as exc:
            with contextlib.suppress(StateError, OSError), self.store.update() as state:
                state.phase = "failed"
            if isinstance(exc, LabError):
                raise LabError(
                    f"{exc}\nThe lab is left as it is for inspection (logs in {layout.log_dir}); "
                    f"`pgvip lab down --prefix {layout.prefix}` removes it."
                ) from exc
            raise
        with self.store.update() as state:
            state.phase = "ready"
        progress(f"[{time.monotonic() - started:5.1f}s] lab {layout.prefix} is ready")

    def _build(self, progress: Progress, t0: float) -> None:
        """Namespaces, switch, guard route, directories and configuration files."""
        layout = self.layout
        # Record first, then create: a killed `up` leaves nothing `down` does not know of.
        with self.store.update() as state:
            state.route = str(layout.subnet)
            state.namespaces = layout.all_namespaces()
        netns.add_unreachable_route(layout.subnet)
        ports = [
            netns.Port(
                layout.namespace(host),
                layout.switch_port(host),
                ipaddress.IPv4Interface(f"{layout.host_ip(host)}/{layout.subnet.prefixlen}"),
            )
            for host in self._hosts()
        ]
        netns.build_switch(layout.switch_ns, layout.bridge, ports)
        self._write_files()
        progress(
            f"[{time.monotonic() - t0:5.1f}s] network ready: {len(ports)} hosts on "
            f"{layout.subnet} (switch {layout.switch_ns}); files in {layout.base_dir}"
        )

    def _write_files(self) -> None:
        layout = self.layout
        pg = pwd.getpwnam("postgres")
        layout.log_dir.mkdir(parents=True, exist_ok=True)
        # PostgreSQL's logging collector writes <node>-postgresql.log here as postgres.
        os.chown(layout.log_dir, pg.pw_uid, pg.pw_gid)
        layout.log_dir.chmod(0o755)
        layout.etcd_dir.parent.mkdir(parents=True, exist_ok=True)
        for node in layout.node_names():
            node_dir = layout.node_dir(node)
            data_dir = layout.data_dir(node)
            sock_dir = layout.socket_dir(node)
            for path, mode in ((node_dir, 0o755), (data_dir, 0o700), (sock_dir, 0o755)):
                path.mkdir(parents=True, exist_ok=True)
                path.chmod(mode)
                os.chown(path, pg.pw_uid, pg.pw_gid)
            patroni_file = self.patroni_config_path(node)
            patroni_file.write_text(
                render.patroni_yaml(
                    layout, node, pg_bin_dir=str(self.pg_bin), log_dir=layout.log_dir
                )
            )
            os.chown(patroni_file, pg.pw_uid, pg.pw_gid)
            patroni_file.chmod(0o600)
            if self.pgvip:
                toml = self.pgvip_config_path(node)
                toml.write_text(render.pgvip_config(layout, node, **self.pgvip_overrides))
                toml.chmod(0o644)

    def _wait_etcd(self, deadline: float, progress: Progress, t0: float) -> None:
        while not self._etcd_healthy():
            self._check_alive([("etcd", "etcd")])
            if time.monotonic() >= deadline:
                raise LabError(
                    f"etcd at {self.layout.etcd_ip}:2379 is not healthy"
                    + self._tails([("etcd", "etcd")])
                )
            time.sleep(0.1)
        progress(f"[{time.monotonic() - t0:5.1f}s] etcd healthy at {self.layout.etcd_ip}:2379")

    @user_errors
    def reset(self, *, timeout: float = 90.0) -> None:
        """Undo a test's damage: heal every port, restart what is not running, wait ready."""
        for host in self._hosts():
            self.heal(host)
        for host, what in self._daemons():
            self.start(host, what)
        self.wait_ready(timeout=timeout, progress=lambda _msg: None)

    # -- down --------------------------------------------------------------

    @user_errors
    def down(self) -> None:
        """Remove everything the lab made, whatever state it is in; a no-op when there is none.

        Kills by recorded PID (checked against its start time) and by `ip netns pids`, never
        by process name. Logs stay in the log directory; the state file goes last.
        """
        self._close_http()
        layout = self.layout
        state: LabState | None = None
        if self.store.exists():
            try:
                with self.store.update() as state:
                    state.phase = "stopping"
            except StateError:
                state = None  # unreadable: fall back to the names a lab of this prefix can have
        existing = set(netns.list_namespaces())
        names = list(
            dict.fromkeys(
                (state.namespaces if state else []) + preflight.candidate_namespaces(layout)
            )
        )
        namespaces = [ns for ns in names if ns in existing]
        recorded = [
            ProcessId(e.pid, e.start_time) for e in (state.processes.values() if state else [])
        ]

        # Daemons first, hard: Patroni would restart PostgreSQL, pgvip would react to it.
        for proc in recorded:
            processes.send(proc, signal.SIGKILL)
        # PostgreSQL gets a fast shutdown (SIGINT) so it removes its shared memory itself.
        postmasters = [
            pm
            for node in layout.node_names()
            if layout.namespace(node) in namespaces and (pm := self._postmaster(node)) is not None
        ]
        for pm in postmasters:
            processes.send(pm, signal.SIGINT)
        processes.wait_gone(postmasters, 5.0)
        leftovers = self._kill_namespaces(namespaces)
        leftovers += [f"PID {p.pid}" for p in processes.wait_gone(recorded, 5.0)]

        for ns in namespaces:
            try:
                netns.delete_namespace(ns)
            except NetnsError as exc:
                leftovers.append(f"namespace {ns} ({exc})")
        if state and state.route:
            try:
                netns.delete_unreachable_route(layout.subnet)
            except NetnsError as exc:
                leftovers.append(f"route unreachable {state.route} ({exc})")
        still = [ns for ns in names if netns.exists(ns)]
        leftovers += [f"namespace {ns}" for ns in still if f"namespace {ns}" not in leftovers]
        if leftovers:
            raise LabError(
                f"lab {layout.prefix} is not fully removed: {', '.join(leftovers)}; "
                "run `pgvip lab down` again"
            )
        for path in [layout.etcd_dir, *(layout.node_dir(n) for n in layout.node_names())]:
            shutil.rmtree(path, ignore_errors=True)
        self.store.remove()

    def _kill_namespaces(self, namespaces: Sequence[str]) -> list[str]:
        """SIGKILL every process inside the namespaces until none is left (up to 10 s)."""
        deadline = time.monotonic() + 10.0
        while True:
            pids = {pid: ns for ns in namespaces for pid in netns.namespace_pids(ns)}
            pids.pop(os.getpid(), None)
            if not pids:
                return []
            if time.monotonic() >= deadline:
                return [f"PID {pid} in {ns}" for pid, ns in sorted(pids.items())]
            processes.send_pids(pids, signal.SIGKILL)
            time.sleep(0.05)
