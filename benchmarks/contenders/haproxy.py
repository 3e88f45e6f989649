"""HAProxy with Patroni's template on a "proxy host" namespace of its own (.20 on the lab's
switch): `option httpchk` against /primary behind port 5000 and /replica behind 5001, every server
`inter 3s fall 3 rise 2 on-marked-down shutdown-sessions`."""

from __future__ import annotations

import csv
import io
import ipaddress
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import labext
from benchmarks.contenders import Contender, ContenderError, Description, Endpoint
from pgvip.lab import netns
from pgvip.lab.cluster import Lab
from pgvip.lab.layout import PATRONI_PORT, PG_PORT

HAPROXY = "haproxy"
RW_PORT = 5000
RO_PORT = 5001
STATS_PORT = 7000
RW_BACKEND = "primary"
RO_BACKEND = "replicas"


@dataclass(frozen=True)
class HaproxySettings:
    """Patroni's template values."""

    inter: str = "3s"
    fall: int = 3
    rise: int = 2
    maxconn: int = 100


def render_config(
    settings: HaproxySettings,
    *,
    nodes: Mapping[str, ipaddress.IPv4Address],
    bind: ipaddress.IPv4Address,
    stats_socket: Path,
) -> str:
    """haproxy.cfg: Patroni's template with a /primary and a /replica listener.

    The one addition is the admin socket the harness reads server states from.
    """

    def servers() -> str:
        return "".join(
            f"    server {name} {ip}:{PG_PORT} maxconn {settings.maxconn} "
            f"check port {PATRONI_PORT}\n"
            for name, ip in nodes.items()
        )

    check = (
        f"    http-check expect status 200\n"
        f"    default-server inter {settings.inter} fall {settings.fall} rise {settings.rise} "
        "on-marked-down shutdown-sessions\n"
    )
    return (
        "# haproxy.cfg rendered by benchmarks/contenders/haproxy.py from Patroni's template.\n"
        "global\n"
        f"    maxconn {settings.maxconn}\n"
        "    # added for the benchmark: the harness reads server states here\n"
        f"    stats socket {stats_socket} mode 600 level admin\n\n"
        "defaults\n"
        "    log global\n"
        "    mode tcp\n"
        "    retries 2\n"
        "    timeout client 30m\n"
        "    timeout connect 4s\n"
        "    timeout server 30m\n"
        "    timeout check 5s\n\n"
        "listen stats\n"
        "    mode http\n"
        f"    bind {bind}:{STATS_PORT}\n"
        "    stats enable\n"
        "    stats uri /\n\n"
        f"listen {RW_BACKEND}\n"
        f"    bind {bind}:{RW_PORT}\n"
        "    option httpchk OPTIONS /primary\n"
        f"{check}{servers()}\n"
        f"listen {RO_BACKEND}\n"
        f"    bind {bind}:{RO_PORT}\n"
        "    balance roundrobin\n"
        "    option httpchk OPTIONS /replica\n"
        f"{check}{servers()}"
    )


def parse_show_stat(text: str) -> dict[str, dict[str, str]]:
    """`show stat` CSV -> {proxy: {server: status}} (FRONTEND/BACKEND rows left out)."""
    if text.startswith("# "):
        text = text[2:]
    out: dict[str, dict[str, str]] = {}
    for row in csv.DictReader(io.StringIO(text)):
        proxy, server = row.get("pxname"), row.get("svname")
        if not proxy or not server or server in ("FRONTEND", "BACKEND"):
            continue
        out.setdefault(proxy, {})[server] = row.get("status") or ""
    return out


def routable(statuses: Mapping[str, str]) -> tuple[str, ...]:
    """Servers HAProxy sends new connections to: UP, including "UP 1/3" (failing, not yet down)."""
    return tuple(sorted(s for s, status in statuses.items() if status.startswith("UP")))


def haproxy_version() -> str:
    try:
        proc = subprocess.run(
            [HAPROXY, "-v"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ContenderError(f"haproxy is not usable: {exc}") from exc
    return proc.stdout.splitlines()[0].strip() if proc.stdout else "haproxy (unknown version)"


class HaproxyContender(Contender):
    kind = "proxy"

    def __init__(self, settings: HaproxySettings | None = None, name: str = "haproxy") -> None:
        self.settings = settings or HaproxySettings()
        self.name = name

    def _dir(self, lab: Lab) -> Path:
        return lab.layout.base_dir / "bench" / self.name

    def _socket(self, lab: Lab) -> Path:
        return self._dir(lab) / "admin.sock"

    def _config(self, lab: Lab) -> str:
        nodes = {n: lab.layout.node_ip(n) for n in lab.layout.node_names()}
        return render_config(
            self.settings, nodes=nodes, bind=labext.host_ip(lab), stats_socket=self._socket(lab)
        )

    def start(self, lab: Lab) -> None:
        if shutil.which(HAPROXY) is None:
            raise ContenderError("haproxy is not installed (apt-get install haproxy)")
        if not netns.exists(lab.layout.namespace(labext.PROXY_HOST)):
            labext.add_host(lab)
        directory = self._dir(lab)
        directory.mkdir(parents=True, exist_ok=True)
        cfg = directory / "haproxy.cfg"
        cfg.write_text(self._config(lab))
        self._socket(lab).unlink(missing_ok=True)
        # -db: stay in the foreground, so the recorded PID is HAProxy's own.
        labext.spawn(
            lab, labext.PROXY_HOST, self.name, [HAPROXY, "-db", "-f", str(cfg)], cwd=directory
        )

    def stop(self, lab: Lab) -> None:
        labext.stop(lab, labext.PROXY_HOST, self.name)

    def rw_endpoint(self, lab: Lab) -> Endpoint:
        return Endpoint(str(labext.host_ip(lab)), RW_PORT)

    def ro_endpoint(self, lab: Lab) -> Endpoint:
        return Endpoint(str(labext.host_ip(lab)), RO_PORT)

    def stats(self, lab: Lab, timeout: float = 1.0) -> dict[str, dict[str, str]]:
        """Server states from the admin socket (a filesystem socket: reachable from here)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self._socket(lab)))
                sock.sendall(b"show stat\n")
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise ContenderError(f"HAProxy stats socket {self._socket(lab)}: {exc}") from exc
        return parse_show_stat(b"".join(chunks).decode(errors="replace"))

    def routing(self, lab: Lab) -> tuple[str, ...] | None:
        return routable(self.stats(lab).get(RW_BACKEND, {}))

    def rw_problem(self, lab: Lab, leader: str) -> str | None:
        try:
            up = routable(self.stats(lab).get(RW_BACKEND, {}))
        except ContenderError as exc:
            return str(exc)
        if up == (leader,):
            return None
        return f"{RW_BACKEND} backend routes to {', '.join(up) or 'nobody'}, leader is {leader}"

    def ro_problem(self, lab: Lab, replicas: Sequence[str]) -> str | None:
        try:
            up = routable(self.stats(lab).get(RO_BACKEND, {}))
        except ContenderError as exc:
            return str(exc)
        if up == tuple(sorted(replicas)):
            return None
        return f"{RO_BACKEND} backend routes to {', '.join(up) or 'nobody'}, replicas are " + (
            ", ".join(replicas) or "none"
        )

    def processes(self, lab: Lab) -> dict[str, list[int]]:
        proc = labext.recorded(lab, labext.PROXY_HOST, self.name)
        if proc is None:
            raise ContenderError("haproxy is not running")
        return {labext.PROXY_HOST: [proc.pid]}

    def describe(self, lab: Lab) -> Description:
        s = self.settings
        return Description(
            name=self.name,
            kind=self.kind,
            summary=(
                f"{haproxy_version()} on its own host ({labext.host_ip(lab)}): :{RW_PORT} "
                f"httpchk /primary, :{RO_PORT} httpchk /replica, inter {s.inter} fall {s.fall} "
                f"rise {s.rise} on-marked-down shutdown-sessions"
            ),
            files={"haproxy.cfg": self._config(lab)},
            notes=[
                "Patroni's template plus an admin socket for the harness; no option redispatch",
                "clients reach it on the proxy host, not on a VIP: no holder to sample",
            ],
        )
