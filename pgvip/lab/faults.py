"""Fault injection and planned changes: start, stop and kill the lab's processes, cut a
node off the switch and heal it, and ask Patroni for a switchover."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from pgvip.lab import etcd_config, netns, processes
from pgvip.lab.base import DAEMONS, ETCD_BIN, KILLABLE, LabBase
from pgvip.lab.errors import LabError, oserror_text, user_errors
from pgvip.lab.processes import ProcessId
from pgvip.lab.state import ProcessEntry


class Faults(LabBase):
    """What a test or the demo does to the cluster."""

    # -- processes -------------------------------------------------------

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

    @user_errors
    def pid(self, node: str, what: str) -> int | None:
        """PID of a running component (etcd, patroni, pgvip, postgres = the postmaster)."""
        proc = self._process(node, what)
        return proc.pid if proc else None

    def _argv(self, host: str, what: str) -> tuple[list[str], Path]:
        """Command line and working directory of a daemon."""
        if what == "etcd":
            return etcd_config.etcd_argv(self.layout, etcd_bin=str(ETCD_BIN)), self.layout.base_dir
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

    @user_errors
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

    @user_errors
    def stop(self, node: str, what: str, sig: int = signal.SIGTERM, timeout: float = 10) -> None:
        """Send `sig` and wait up to `timeout` s for the process to end, then SIGKILL it."""
        proc = self._process(node, what)
        if proc is not None:
            processes.terminate(proc, sig, timeout)

    @user_errors
    def kill(self, node: str, what: str) -> None:
        """SIGKILL a component ("postgres" = the postmaster) and wait until it is gone."""
        proc = self._process(node, what)
        if proc is None:
            return
        processes.send(proc, signal.SIGKILL)
        if processes.wait_gone([proc], 5.0):
            raise LabError(f"{what} on {node} (PID {proc.pid}) survived SIGKILL for 5 s")

    @user_errors
    def signal(self, node: str, what: str, sig: int) -> None:
        """Send `sig` (e.g. SIGSTOP, SIGCONT) to a running component, by its recorded PID."""
        proc = self._process(node, what)
        if proc is None:
            raise LabError(f"{what} on {node} is not running")
        processes.send(proc, sig)

    # -- the network -----------------------------------------------------

    @user_errors
    def partition(self, node: str) -> None:
        """Cut a host off the switch (its switch-side port goes down)."""
        self._ns(node)
        netns.set_port(self.layout.switch_ns, self.layout.switch_port(node), up=False)

    @user_errors
    def heal(self, node: str) -> None:
        self._ns(node)
        netns.set_port(self.layout.switch_ns, self.layout.switch_port(node), up=True)

    # -- planned changes -------------------------------------------------

    @user_errors
    def switchover(self, leader: str, candidate: str) -> None:
        """POST /switchover to the leader asking it to hand over to `candidate`; waits for it."""
        self._node(leader)
        self._node(candidate)
        body = json.dumps({"leader": leader, "candidate": candidate}).encode()
        url = f"{self.layout.patroni_url(leader)}/switchover"
        try:
            answer = self._client_http().request("POST", url, body=body, timeout=30.0)
        except OSError as exc:
            raise LabError(f"switchover {leader} -> {candidate}: {oserror_text(exc)}") from exc
        if answer.status != 200:
            text = answer.body.decode(errors="replace").strip()
            raise LabError(
                f"switchover {leader} -> {candidate} refused: HTTP {answer.status} {text}"
            )

    @user_errors
    def set_tag(self, node: str, key: str, value: object) -> None:
        """Set a Patroni tag (e.g. noloadbalance) in the node's patroni.yml and POST /reload,
        as an operator drains a replica; Patroni shows it in /cluster within a loop_wait."""
        import yaml  # the lab extra's PyYAML, as in render.py

        self._node(node)
        path = self.patroni_config_path(node)
        doc = yaml.safe_load(path.read_text())
        doc.setdefault("tags", {})[key] = value
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        url = f"{self.layout.patroni_url(node)}/reload"
        try:
            answer = self._client_http().request("POST", url, timeout=10.0)
        except OSError as exc:
            raise LabError(f"reload of {node}'s Patroni: {oserror_text(exc)}") from exc
        if answer.status not in (200, 202):
            text = answer.body.decode(errors="replace").strip()
            raise LabError(f"reload of {node}'s Patroni refused: HTTP {answer.status} {text}")
