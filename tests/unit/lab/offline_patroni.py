"""Run `patroni --validate-config` with no network at all.

The validator checks that the etcd hosts in the file accept TCP connections. Asked from
the root namespace that would send packets towards a lab (or VM) address, which the
network rule forbids. So it runs in a private network namespace where the etcd address
sits on `lo` and a listener answers for it: nothing leaves that namespace.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

PATRONI = str(Path(sys.executable).with_name("patroni"))


def validate_offline(path: Path) -> subprocess.CompletedProcess[str]:
    cfg = yaml.safe_load(path.read_text())
    hosts = [h.rsplit(":", 1) for h in cfg.get("etcd3", {}).get("hosts", [])]
    script = ["ip link set lo up"]
    listeners = []
    for host, port in hosts:
        script.append(f"ip addr add {host}/32 dev lo")
        listeners.append((host, int(port)))
    listen = (
        "import socket, sys, time\n"
        f"for h, p in {listeners!r}:\n"
        "    s = socket.socket(); s.bind((h, p)); s.listen(); globals()[f's{p}{h}'] = s\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    script.append(
        f"{shlex.quote(sys.executable)} -c {shlex.quote(listen)} >/dev/null 2>&1 & pid=$!"
    )
    script.append("sleep 0.5")
    # -i: whether :8008/:5432 happen to be free says nothing about the file.
    script.append(
        f"{shlex.quote(PATRONI)} --validate-config --ignore-listen-port {shlex.quote(str(path))}"
    )
    script.append('rc=$?; kill "$pid" 2>/dev/null; exit $rc')
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "-r", "--net"]
    return subprocess.run(
        [*unshare, "sh", "-c", "\n".join(script)], capture_output=True, text=True, timeout=60
    )
