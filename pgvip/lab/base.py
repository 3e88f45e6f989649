"""What every part of the lab stands on: its layout, the state file, paths, and running
commands inside its namespaces."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

from pgvip.lab import etcd_config, netns, processes, render
from pgvip.lab.errors import LabError
from pgvip.lab.layout import (
    LabLayout,
)
from pgvip.lab.netns import NamespaceHttp, NetnsError
from pgvip.lab.processes import ProcessId
from pgvip.lab.state import ProcessEntry, StateError, StateStore, process_key

DEFAULT_PG_BIN = render.DEFAULT_PG_BIN
ETCD_BIN = Path(etcd_config.DEFAULT_ETCD_BIN)
DAEMONS = ("etcd", "patroni", "pgvip")
KILLABLE = (*DAEMONS, "postgres")
POLL_INTERVAL = 0.25
LOG_TAIL_LINES = 15

Progress = Callable[[str], Any]


class LabBase:
    """One lab: its layout and the state file that records it."""

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

    def __enter__(self) -> Self:
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

    def _hosts(self) -> list[str]:
        return ["etcd", "client", *self.layout.node_names()]

    def _entry(self, host: str, what: str) -> ProcessEntry | None:
        if not self.store.exists():
            return None
        try:
            state = self.store.load()
        except StateError:
            return None
        return state.processes.get(process_key(host, what))
