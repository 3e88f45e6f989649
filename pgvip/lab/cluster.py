"""The lab's lifecycle: build a Patroni cluster (etcd, N nodes, optionally pgvip) in network
namespaces, wait until it is ready, break it on purpose, repair it, and tear it down.

The CLI (`pgvip lab ...`) and the pytest fixture both drive this one class. Patroni's REST
API is queried over HTTP from the client namespace by worker threads that setns() into it,
which needs no curl and makes no process per poll.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import ipaddress
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures.thread import BrokenThreadPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pgvip.lab import netns, preflight, processes, render
from pgvip.lab.layout import (
    LAB_ROOT,
    PG_PORT,
    SUPERUSER,
    SUPERUSER_PASSWORD,
    LabLayout,
    LayoutError,
)
from pgvip.lab.netns import NamespaceHttp, NetnsError
from pgvip.lab.preflight import PreflightError
from pgvip.lab.processes import ProcessError, ProcessId
from pgvip.lab.state import LabState, ProcessEntry, StateError, StateStore, process_key
from pgvip.patroni.roles import PRIMARY_ROLES, REPLICA_ROLES

DEFAULT_PG_BIN = render.DEFAULT_PG_BIN
ETCD_BIN = Path(render.DEFAULT_ETCD_BIN)
DAEMONS = ("etcd", "patroni", "pgvip")
KILLABLE = (*DAEMONS, "postgres")
POLL_INTERVAL = 0.25
LOG_TAIL_LINES = 15

Progress = Callable[[str], Any]
P = ParamSpec("P")
R = TypeVar("R")


class LabError(Exception):
    """Something about the lab went wrong; the message is meant for the user as is."""


def _user_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Present the helper modules' errors as LabError, keeping the original as the cause."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (NetnsError, ProcessError, PreflightError, StateError, LayoutError) as exc:
            raise LabError(str(exc)) from exc
        except render.RenderError as exc:
            raise LabError(f"cannot render the lab's configuration: {exc}") from exc
        except OSError as exc:  # files and directories under the lab root
            raise LabError(f"lab file operation failed: {exc}") from exc

    return wrapper


@dataclass(frozen=True)
class Readiness:
    """How far the cluster is from ready, in words, and which nodes hold it back."""

    ready: bool
    summary: str
    leader: str | None
    behind: tuple[str, ...]


def assess_cluster(
    members: Sequence[Mapping[str, Any]],
    nodes: Sequence[str],
    live: Mapping[str, Mapping[str, Any] | str] | None = None,
) -> Readiness:
    """Ready means exactly one running leader and every other node a streaming replica.

    `members` is Patroni's /cluster (the DCS view, which keeps a dead member's last state
    for up to ttl); `live` maps each node to its own /patroni answer, or to why it gave none,
    and must agree: the leader runs as primary and streams to every replica, and each
    replica runs and streams.
    """
    by_name = {str(m.get("name")): m for m in members}
    leaders = [
        name
        for name, m in by_name.items()
        if m.get("role") in PRIMARY_ROLES and m.get("state") == "running"
    ]
    leader = leaders[0] if len(leaders) == 1 else None
    parts: list[str] = []
    behind: list[str] = []
    if leader is not None:
        parts.append(f"leader {leader}")
    elif leaders:
        parts.append(f"{len(leaders)} leaders ({', '.join(sorted(leaders))})")
    else:
        parts.append("no leader yet")
    for node in nodes:
        m = by_name.get(node)
        if node in leaders:
            problem = None
        elif m is None:
            problem = "not registered"
        elif m.get("role") in REPLICA_ROLES and m.get("state") == "streaming":
            problem = None
        else:
            problem = f"{m.get('role', '?')} {m.get('state', '?')}"
        if problem is None and live is not None:
            problem = _live_problem(node, live.get(node, "no answer"), leader, nodes)
        if problem is not None:
            parts.append(f"{node} {problem}")
            behind.append(node)
        elif node not in leaders:
            parts.append(f"{node} streaming")
    if leader is None:
        behind = list(nodes)  # nobody leads: every node's Patroni is a suspect
    ready = leader is not None and not behind
    return Readiness(ready, "; ".join(parts), leader, tuple(dict.fromkeys(behind)))


def _live_problem(
    node: str, view: Mapping[str, Any] | str, leader: str | None, nodes: Sequence[str]
) -> str | None:
    """What a node's own /patroni answer contradicts in the DCS view, or None."""
    if isinstance(view, str):
        return f"(Patroni REST: {view})"
    role, state = view.get("role", "?"), view.get("state", "?")
    if node == leader:
        if role not in PRIMARY_ROLES or state != "running":
            return f"(leads in DCS, but its Patroni says {role} {state})"
        streaming = {
            str(r.get("application_name"))
            for r in view.get("replication") or []
            if r.get("state") == "streaming"
        }
        missing = [n for n in nodes if n != node and n not in streaming]
        if missing:
            return f"(primary, not yet streaming to {', '.join(missing)})"
        return None
    replication = view.get("replication_state", "?")
    if role in REPLICA_ROLES and state == "running" and replication == "streaming":
        return None
    return f"(its Patroni says {role} {state}, replication {replication})"


class Lab:
    """One lab: its layout, the state file that records it, and the operations on it."""

    def __init__(
        self,
        layout: LabLayout,
        *,
        pgvip: bool = True,
        pg_bin: str | None = None,
        pgvip_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.layout = layout
        self.pgvip = pgvip
        # Absolute: Patroni runs with the node directory as its working directory.
        self.pg_bin = Path(pg_bin or DEFAULT_PG_BIN).absolute()
        self.pgvip_overrides = dict(pgvip_overrides or {})
        # The venv this code runs from also holds patroni and pgvip; not resolved, because the
        # venv's python is a symlink to /usr/bin/python3.
        self.venv_bin = Path(sys.executable).parent
        self.store = StateStore(layout.state_file)
        self._http: NamespaceHttp | None = None

    def close(self) -> None:
        """Stop the HTTP worker threads that sit in the client namespace (down() does too)."""
        self._close_http()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def owner(self) -> int | None:
        """PID of the still-running process that built this lab (a test session), or None."""
        try:
            state = self.store.load()
        except StateError:
            return None
        if state.owner_pid is None or state.owner_start_time is None:
            return None
        proc = ProcessId(state.owner_pid, state.owner_start_time)
        return proc.pid if processes.is_alive(proc) else None

    def __repr__(self) -> str:
        return f"Lab({self.layout.prefix!r}, {self.layout.subnet}, nodes={self.layout.nodes})"

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

    # -- paths -----------------------------------------------------------

    def pgvip_config_path(self, node: str) -> Path:
        return self.layout.node_dir(node) / "pgvip.toml"

    def patroni_config_path(self, node: str) -> Path:
        return self.layout.node_dir(node) / "patroni.yml"

    def log_path(self, node_or_host: str, what: str) -> Path:
        """Log of a component: `<host>-<what>.log` (PostgreSQL's own file is `-postgresql`)."""
        if what == "postgres":
            return self.layout.log_dir / f"{node_or_host}-postgresql.log"
        if node_or_host == what:
            return self.layout.log_dir / f"{what}.log"
        return self.layout.log_dir / f"{node_or_host}-{what}.log"

    # -- commands inside the lab -----------------------------------------

    def _ns(self, host: str) -> str:
        hosts = ["sw", "etcd", "client", *self.layout.node_names()]
        if host not in hosts:
            raise LabError(f"unknown host {host!r}: this lab has {', '.join(hosts)}")
        return self.layout.namespace(host)

    def _node(self, node: str) -> str:
        if node not in self.layout.node_names():
            raise LabError(
                f"unknown node {node!r}: this lab has {', '.join(self.layout.node_names())}"
            )
        return node

    def run(
        self,
        host: str,
        argv: list[str],
        *,
        check: bool = False,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the host's namespace (`ip netns exec`), capturing text output.

        With `check`, a non-zero exit raises LabError; so does exceeding `timeout`.
        """
        try:
            return netns.run(
                netns.exec_argv(self._ns(host), argv),
                check=check,
                timeout=timeout,
                env=env,
                input=input,
            )
        except NetnsError as exc:
            raise LabError(str(exc)) from exc

    def _client_http(self) -> NamespaceHttp:
        if self._http is None:
            # Two workers per node (/cluster and /patroni), so a partitioned node's timeout
            # does not delay the others.
            self._http = NamespaceHttp(self.layout.client_ns, workers=2 * self.layout.nodes + 1)
        return self._http

    def _close_http(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _get_json(self, url: str, timeout: float = 1.0) -> Any:
        answer = self._client_http().request("GET", url, timeout=timeout)
        if answer.status != 200:
            raise OSError(f"HTTP {answer.status} from {url}")
        return answer.json()

    # -- the Patroni view ------------------------------------------------

    @_user_errors
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
                errors[node] = _oserror_text(exc)
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

    @_user_errors
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
                views[node] = _oserror_text(exc)
                continue
            try:
                doc = answer.json()
            except ValueError:
                views[node] = f"HTTP {answer.status} with invalid JSON"
                continue
            # /patroni answers 503 while PostgreSQL is not running, with the same document.
            views[node] = doc if isinstance(doc, dict) else f"HTTP {answer.status}"
        return views

    def leader(self) -> str | None:
        """The name of the running leader, or None (also when no Patroni answers)."""
        try:
            members = self.members()
        except LabError:
            return None
        return assess_cluster(members, self.layout.node_names()).leader

    @_user_errors
    def switchover(self, leader: str, candidate: str) -> None:
        """POST /switchover to the leader asking it to hand over to `candidate`; waits for it."""
        self._node(leader)
        self._node(candidate)
        body = json.dumps({"leader": leader, "candidate": candidate}).encode()
        url = f"{self.layout.patroni_url(leader)}/switchover"
        try:
            answer = self._client_http().request("POST", url, body=body, timeout=30.0)
        except OSError as exc:
            raise LabError(f"switchover {leader} -> {candidate}: {_oserror_text(exc)}") from exc
        if answer.status != 200:
            text = answer.body.decode(errors="replace").strip()
            raise LabError(
                f"switchover {leader} -> {candidate} refused: HTTP {answer.status} {text}"
            )

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

    # -- processes -------------------------------------------------------

    def _entry(self, host: str, what: str) -> ProcessEntry | None:
        if not self.store.exists():
            return None
        try:
            state = self.store.load()
        except StateError:
            return None
        return state.processes.get(process_key(host, what))

    def _postmaster(self, node: str) -> ProcessId | None:
        """The postmaster from <data>/postmaster.pid, if it runs inside the node's namespace."""
        try:
            first = (self.layout.data_dir(node) / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (OSError, ValueError):
            return None
        if pid not in netns.namespace_pids(self.layout.namespace(node)):
            return None
        return processes.identify(pid)

    def _process(self, node: str, what: str) -> ProcessId | None:
        if what not in KILLABLE:
            raise LabError(f"unknown process {what!r}: choose one of {', '.join(KILLABLE)}")
        if what == "etcd":
            if node != "etcd":
                raise LabError("etcd runs on host 'etcd' only")
        else:
            self._node(node)
        if what == "pgvip" and not self.pgvip:
            raise LabError("this lab runs without pgvip (--no-pgvip)")
        if what == "postgres":
            return self._postmaster(node)
        entry = self._entry(node, what)
        if entry is None:
            return None
        proc = ProcessId(entry.pid, entry.start_time)
        return proc if processes.is_alive(proc) else None

    @_user_errors
    def pid(self, node: str, what: str) -> int | None:
        """PID of a running component (etcd, patroni, pgvip, postgres = the postmaster)."""
        proc = self._process(node, what)
        return proc.pid if proc else None

    def _argv(self, host: str, what: str) -> tuple[list[str], Path]:
        """Command line and working directory of a daemon."""
        if what == "etcd":
            return render.etcd_argv(self.layout, etcd_bin=str(ETCD_BIN)), self.layout.base_dir
        node_dir = self.layout.node_dir(host)
        if what == "patroni":
            # setpriv and env exec in place: the recorded PID is Patroni's own.
            argv = [
                "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
                "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"HOME={node_dir}",
                "LANG=C.UTF-8",
                str(self.venv_bin / "patroni"), str(self.patroni_config_path(host)),
            ]  # fmt: skip
            return argv, node_dir
        return self._pgvip_argv(host), node_dir

    def _pgvip_argv(self, node: str) -> list[str]:
        """pgvip as the `pgvip` user with only CAP_NET_ADMIN + CAP_NET_RAW, in a clean
        environment (an inherited PGVIP_* variable would override the rendered config)."""
        caps = "-all,+net_admin,+net_raw"
        return [
            "setpriv", "--reuid=pgvip", "--regid=pgvip", "--init-groups",
            f"--inh-caps={caps}", f"--ambient-caps={caps}", f"--bounding-set={caps}", "--",
            "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
            str(self.venv_bin / "pgvip"), "run", "--config", str(self.pgvip_config_path(node)),
        ]  # fmt: skip

    @_user_errors
    def start(self, node: str, what: str) -> None:
        """Start a daemon (`patroni`, `pgvip`, or `etcd` on host 'etcd'); no-op if it runs."""
        if what not in DAEMONS:
            raise LabError(f"cannot start {what!r}: choose one of {', '.join(DAEMONS)}")
        if self._process(node, what) is not None:
            return
        argv, cwd = self._argv(node, what)
        proc = processes.spawn(
            netns.exec_argv(self.layout.namespace(node), argv), self.log_path(node, what), cwd=cwd
        )
        entry = ProcessEntry(node, what, proc.pid, proc.start_time, argv, time.time())
        with self.store.update() as state:
            state.processes[entry.key] = entry

    @_user_errors
    def stop(self, node: str, what: str, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """Send `sig` and wait up to `timeout` s for the process to end, then SIGKILL it."""
        proc = self._process(node, what)
        if proc is not None:
            processes.terminate(proc, sig, timeout)

    @_user_errors
    def kill(self, node: str, what: str) -> None:
        """SIGKILL a component ("postgres" = the postmaster) and wait until it is gone."""
        proc = self._process(node, what)
        if proc is None:
            return
        processes.send(proc, signal.SIGKILL)
        if processes.wait_gone([proc], 5.0):
            raise LabError(f"{what} on {node} (PID {proc.pid}) survived SIGKILL for 5 s")

    # -- the network -----------------------------------------------------

    @_user_errors
    def partition(self, node: str) -> None:
        """Cut a host off the switch (its switch-side port goes down)."""
        self._ns(node)
        netns.set_port(self.layout.switch_ns, self.layout.switch_port(node), up=False)

    @_user_errors
    def heal(self, node: str) -> None:
        self._ns(node)
        netns.set_port(self.layout.switch_ns, self.layout.switch_port(node), up=True)

    def _hosts(self) -> list[str]:
        return ["etcd", "client", *self.layout.node_names()]

    # -- up --------------------------------------------------------------

    @_user_errors
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

    @_user_errors
    def wait_ready(
        self, *, timeout: float, progress: Progress = print, _t0: float | None = None
    ) -> None:
        """Wait for one leader, N-1 streaming replicas and (with pgvip) SQL through the RW VIP.

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
                if not self.pgvip:
                    break
                vip_ok = self.rw_vip_answers()
                summary += "; RW VIP " + ("answers SQL" if vip_ok else "not answering yet")
                if vip_ok:
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

    @_user_errors
    def reset(self, *, timeout: float = 90.0) -> None:
        """Undo a test's damage: heal every port, restart what is not running, wait ready."""
        for host in self._hosts():
            self.heal(host)
        for host, what in self._daemons():
            self.start(host, what)
        self.wait_ready(timeout=timeout, progress=lambda _msg: None)

    # -- status ------------------------------------------------------------

    @_user_errors
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
        for node in layout.node_names():
            ns = layout.namespace(node)
            if ns not in existing:
                continue
            held = {a.ip for ifname in ("eth0", "lo") for a in netns.ipv4_addresses(ns, ifname)}
            if layout.rw_vip in held:
                result["vip_holders"]["rw"].append(node)
            if layout.ro_vip in held:
                result["vip_holders"]["ro"].append(node)
        for host in self._hosts():
            if netns.port_is_up(layout.switch_ns, layout.switch_port(host)) is False:
                result["partitioned"].append(host)
        return result

    # -- down --------------------------------------------------------------

    @_user_errors
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


def _oserror_text(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return str(exc) or type(exc).__name__
