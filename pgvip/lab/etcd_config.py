"""The lab's single etcd (v3 API): its settings as command-line flags for the netns lab and as
ETCD_* variables for the Vagrant VM. Stdlib only, like the rest of pgvip.lab.render.
"""

from __future__ import annotations

from pathlib import Path

from pgvip.lab.layout import ETCD_CLIENT_PORT, ETCD_PEER_PORT, LabLayout

DEFAULT_ETCD_BIN = "/usr/bin/etcd"


def etcd_settings(layout: LabLayout, *, data_dir: str | Path | None = None) -> dict[str, str]:
    """etcd's settings as flag name -> value; `etcd_argv` and `etcd_env` both derive from it."""
    ip = layout.etcd_ip
    peer = f"http://{ip}:{ETCD_PEER_PORT}"
    return {
        "name": "etcd",
        "data-dir": str(data_dir if data_dir is not None else layout.etcd_dir),
        # Loopback too, so an operator inside the etcd namespace/VM can use etcdctl as is.
        "listen-client-urls": f"http://{ip}:{ETCD_CLIENT_PORT},http://127.0.0.1:{ETCD_CLIENT_PORT}",
        "advertise-client-urls": f"http://{ip}:{ETCD_CLIENT_PORT}",
        "listen-peer-urls": peer,
        "initial-advertise-peer-urls": peer,
        "initial-cluster": f"etcd={peer}",
        "initial-cluster-state": "new",
        "initial-cluster-token": f"{layout.prefix}-etcd",
        "logger": "zap",
        "log-outputs": "stderr",
    }


def etcd_argv(
    layout: LabLayout, *, etcd_bin: str = DEFAULT_ETCD_BIN, data_dir: str | Path | None = None
) -> list[str]:
    """The command line of the lab's single etcd (v3 API at etcd_ip:2379)."""
    settings = etcd_settings(layout, data_dir=data_dir)
    return [etcd_bin, *(f"--{key}={value}" for key, value in settings.items())]


def etcd_env(layout: LabLayout, *, data_dir: str | Path | None = None) -> str:
    """The same settings as ETCD_* variables, for Debian's /etc/default/etcd."""
    settings = etcd_settings(layout, data_dir=data_dir)
    lines = ["# etcd settings rendered by pgvip.lab.render (Debian reads /etc/default/etcd)."]
    for key, value in settings.items():
        lines.append(f'ETCD_{key.upper().replace("-", "_")}="{value}"')
    return "\n".join(lines) + "\n"
