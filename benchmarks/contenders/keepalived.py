"""keepalived 2.2 as the seed configures it: a `vrrp_script` that curls Patroni's /primary every
second (rise 1, fall 1), one VRRP instance per node with `state MASTER`, priority 244 and
advert_int 1, run with `-P` (VRRP only) inside each node's namespace with its own pid files."""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks import labext
from benchmarks.contenders import (
    Contender,
    ContenderError,
    Description,
    Endpoint,
    holder_problem,
    require_released,
)
from benchmarks.footprint import with_children
from pgvip.lab.cluster import Lab
from pgvip.lab.layout import PATRONI_PORT, PG_PORT

KEEPALIVED = "keepalived"
SCRIPT_NAME = "keepalived_check_patroni.sh"


@dataclass(frozen=True)
class KeepalivedSettings:
    """The seed's values. `weight` 0 is what the seed ran (its logs show FAULT on a failed
    check); its later notify example adds `weight 1`, which turns a failed check into
    "priority 244 instead of 245" and never FAULT."""

    vrid: int = 51
    priority: int = 244
    advert_int: int = 1
    interval: int = 1
    timeout: int = 5
    rise: int = 1
    fall: int = 1
    weight: int = 0
    vrrp_version: int = 3


def render_check_script(patroni_port: int = PATRONI_PORT) -> str:
    """The seed's check script, over plain HTTP as the lab's Patroni serves it."""
    return (
        "#!/bin/bash\n"
        "# The seed's keepalived_check_patroni.sh: exit 0 only if this node's Patroni says it\n"
        "# is the primary (curl --fail exits 22 on HTTP 503).\n"
        f"/usr/bin/curl -X GET -I --fail http://127.0.0.1:{patroni_port}/primary &>/dev/null\n"
    )


def render_config(
    settings: KeepalivedSettings,
    *,
    interface: str,
    vip: ipaddress.IPv4Address,
    script_path: Path,
) -> str:
    """keepalived.conf of one node (identical on every node, as in the seed)."""
    weight = f"    weight {settings.weight}\n" if settings.weight else ""
    return (
        "! keepalived.conf rendered by benchmarks/contenders/keepalived.py from the seed's\n"
        '! "VIP Conf with a script check" (interface and VIP adapted to the lab).\n'
        "global_defs {\n"
        "    enable_script_security\n"
        "    script_user root\n"
        f"    vrrp_version {settings.vrrp_version}\n"
        "}\n\n"
        "vrrp_script keepalived_check_patroni {\n"
        f'    script "{script_path}"\n'
        f"    interval {settings.interval}\n"
        f"    timeout {settings.timeout}\n"
        f"    rise {settings.rise}\n"
        f"    fall {settings.fall}\n"
        f"{weight}"
        "}\n\n"
        "vrrp_instance VI_1 {\n"
        "    state MASTER\n"
        f"    interface {interface}\n"
        f"    virtual_router_id {settings.vrid}\n"
        f"    priority {settings.priority}\n"
        f"    advert_int {settings.advert_int}\n"
        "    virtual_ipaddress {\n"
        f"        {vip}/32\n"
        "    }\n"
        "    track_script {\n"
        "        keepalived_check_patroni\n"
        "    }\n"
        "}\n"
    )


def keepalived_version() -> str:
    try:
        proc = subprocess.run(
            [KEEPALIVED, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ContenderError(f"keepalived is not usable: {exc}") from exc
    return (proc.stdout + proc.stderr).splitlines()[0].strip()


class KeepalivedContender(Contender):
    kind = "vip"

    def __init__(self, settings: KeepalivedSettings | None = None, name: str = "keepalived"):
        self.settings = settings or KeepalivedSettings()
        self.name = name

    def _dir(self, lab: Lab) -> Path:
        return lab.layout.base_dir / "bench" / self.name

    def _files(self, lab: Lab) -> tuple[Path, dict[str, str]]:
        directory = self._dir(lab)
        script = directory / SCRIPT_NAME
        conf = render_config(
            self.settings, interface="eth0", vip=lab.layout.rw_vip, script_path=script
        )
        return script, {SCRIPT_NAME: render_check_script(), "keepalived.conf": conf}

    def start(self, lab: Lab) -> None:
        if shutil.which(KEEPALIVED) is None:
            raise ContenderError("keepalived is not installed (apt-get install keepalived)")
        directory = self._dir(lab)
        # enable_script_security refuses a script in a directory others may write to.
        directory.mkdir(parents=True, exist_ok=True)
        for path in (directory.parent, directory):
            os.chown(path, 0, 0)
            path.chmod(0o755)
        script, files = self._files(lab)
        script.write_text(files[SCRIPT_NAME])
        script.chmod(stat.S_IRWXU)  # the seed's chmod 700
        conf = directory / "keepalived.conf"
        conf.write_text(files["keepalived.conf"])
        for node in lab.layout.node_names():
            argv = [
                KEEPALIVED, "-P", "-n", "-l", "-D", "-G",
                "-f", str(conf),
                "-p", str(directory / f"{node}.pid"),
                "-r", str(directory / f"{node}-vrrp.pid"),
            ]  # fmt: skip
            labext.spawn(lab, node, self.name, argv, cwd=directory)

    def stop(self, lab: Lab) -> None:
        for node in lab.layout.node_names():
            labext.stop(lab, node, self.name)
        require_released(lab, self.name)

    def rw_endpoint(self, lab: Lab) -> Endpoint:
        return Endpoint(str(lab.layout.rw_vip), PG_PORT)

    def vip(self, lab: Lab) -> ipaddress.IPv4Address:
        return lab.layout.rw_vip

    def rw_problem(self, lab: Lab, leader: str) -> str | None:
        return holder_problem(lab, lab.layout.rw_vip, leader)

    def processes(self, lab: Lab) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for node in lab.layout.node_names():
            proc = labext.recorded(lab, node, self.name)
            if proc is None:
                raise ContenderError(f"{self.name} is not running on {node}")
            # The parent and its VRRP child; the curl checks are reaped into the child's cutime.
            found[node] = with_children([proc.pid])
        return found

    def describe(self, lab: Lab) -> Description:
        _, files = self._files(lab)
        s = self.settings
        return Description(
            name=self.name,
            kind=self.kind,
            summary=(
                f"{keepalived_version()}, -P; vrrp_script curl /primary interval {s.interval} "
                f"rise {s.rise} fall {s.fall} weight {s.weight}; state MASTER, priority "
                f"{s.priority}, advert_int {s.advert_int}, VRRPv{s.vrrp_version}"
            ),
            files=files,
            notes=[
                "identical configuration on every node, as in the seed",
                f"vrrp_version {s.vrrp_version} is stated explicitly (keepalived's default is 2);"
                " with advert_int 1 and priority 244 both versions time out identically",
            ],
        )
