"""A fast memory soak without Patroni (issue 14): three real `pgvip run` daemons (RW and RO)
in namespaces of their own beside Patroni stand-ins, the leader moved every --period seconds
(and, every --blackout-every moves, no leader at all for a while), `/status` and `/metrics`
scraped every --scrape seconds; each daemon's RSS and open files sampled from /proc.

`python -m benchmarks.rss_soak --prefix pgr --subnet 10.20.41.0/24 --minutes 5` builds
namespaces <prefix>-<tag>-{sw,a,b,c}, runs, prints one RSS line per --sample seconds and the
growth from the end of --warmup to the end, and deletes every namespace and process it
started, even on failure. `--set ro=` (or any SECTION.KEY=JSON) changes the daemons' config.
`--tracemalloc 0` also writes, at the baseline and at every sample (SIGUSR2 to a small
wrapper around `pgvip run`), the live objects by type and pymalloc's statistics, and prints
the types that grew; `--tracemalloc N` runs the daemons under tracemalloc (N frames; slower,
more memory) and adds the top growth by traceback. No database and no real Patroni, so no
client traffic through the VIPs: the real lab's soak (benchmarks.soak) covers that. A
benchmark, not a test.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from benchmarks.rss_compare import compare, compare_types

REPO = Path(__file__).resolve().parents[1]
HOSTS = ("a", "b", "c")
CLONE_NEWNET = 0x40000000
# Run in the daemon's process by --tracemalloc: SIGUSR2 writes a snapshot to $PGVIP_SNAP.<n>.
TRACER = """
import collections, gc, json, os, signal, sys, threading, tracemalloc
count = [0]
def dump(*_):
    count[0] += 1
    base = f"{os.environ['PGVIP_SNAP']}.{count[0]}"
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(base)
    types = collections.Counter(type(o).__qualname__ for o in gc.get_objects())
    with open(base + ".types", "w") as out:
        json.dump({"threads": threading.active_count(), "types": types}, out)
    with open(base + ".txt", "w") as out:
        fd = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(fd, 2)
            os.close(fd)
signal.signal(signal.SIGUSR2, dump)
if os.environ.get("PGVIP_TRIM_EVERY"):  # an experiment: give free heap pages back to the OS
    import ctypes, time
    def trim(every=float(os.environ["PGVIP_TRIM_EVERY"]), libc=ctypes.CDLL("libc.so.6")):
        while True:
            time.sleep(every)
            libc.malloc_trim(0)
    threading.Thread(target=trim, daemon=True).start()
from pgvip.cli import main
sys.argv = ["pgvip", *sys.argv[1:]]
main()
"""


def sh(*args: str, check: bool = True) -> str:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=30).stdout


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Soak:
    def __init__(self, prefix: str, subnet: IPv4Network, workdir: Path) -> None:
        self.tag = secrets.token_hex(2)
        self.prefix, self.subnet, self.workdir = prefix, subnet, workdir
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        hosts = list(subnet.hosts())
        self.ip = {h: str(hosts[i]) for i, h in enumerate(HOSTS)}
        self.rw_vip, self.ro_vip = str(hosts[99]), str(hosts[100])
        self.leader: str | None = None
        self.overrides: list[str] = []
        self.env: dict[str, str] = {}  # extra environment of the daemons (MALLOC_ARENA_MAX=1)
        self.wrapper = ""  # --wrap: a command each daemon runs under (heaptrack)
        self.scrapes = 0
        self.scrape_errors = 0
        self._stop = threading.Event()

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{self.tag}-{host}"

    # -- the namespaces ------------------------------------------------------------------

    def build(self) -> None:
        sw = self.ns("sw")
        sh("ip", "netns", "add", sw)
        self.namespaces.append(sw)
        sh("ip", "-n", sw, "link", "set", "lo", "up")
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        for host in HOSTS:
            ns = self.ns(host)
            sh("ip", "netns", "add", ns)
            self.namespaces.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            port = f"{self.prefix}{self.tag}{host}"
            sh("ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", port,
               "netns", sw)  # fmt: skip
            sh("ip", "-n", sw, "link", "set", port, "master", "br0", "up")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "addr", "add", f"{self.ip[host]}/{self.subnet.prefixlen}",
               "dev", "eth0")  # fmt: skip

    def down(self) -> None:
        self._stop.set()
        for proc in [*self.daemons.values(), *self.procs]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [*self.daemons.values(), *self.procs]:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)

    # -- Patroni stand-ins ---------------------------------------------------------------

    def state_file(self, host: str) -> Path:
        return self.workdir / host / "patroni-state.json"

    def set_leader(self, leader: str | None) -> None:
        """Every stand-in's answers for this leader (None: a cluster without one)."""
        self.leader = leader
        members = [
            {"name": h, "role": "leader" if h == leader else "replica",
             "state": "running" if h == leader else "streaming", "host": self.ip[h],
             "port": 8008, "api_url": f"http://{self.ip[h]}:8008/patroni", "timeline": 1,
             "lag": 0 if h != leader else None}
            for h in HOSTS
        ]  # fmt: skip
        for h in HOSTS:
            state = {"primary": 200 if h == leader else 503, "name": h,
                     "cluster": {"members": members}}  # fmt: skip
            tmp = self.state_file(h).with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(self.state_file(h))

    def start(self, tracemalloc: int) -> None:
        for h in HOSTS:
            (self.workdir / h).mkdir(parents=True, exist_ok=True)
        self.set_leader(HOSTS[0])
        for h in HOSTS:
            self.procs.append(subprocess.Popen(
                ["ip", "netns", "exec", self.ns(h), sys.executable, "-m",
                 "tests.integration.standin_patroni", "--listen", "0.0.0.0:8008",
                 "--state", str(self.state_file(h))],
                cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))  # fmt: skip
        time.sleep(1.5)
        for i, h in enumerate(HOSTS):
            config = self.workdir / h / "pgvip.toml"
            config.write_text(self.config(h, 200 - 10 * i))
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "RUNTIME_DIRECTORY": str(self.workdir / h), **self.env}  # fmt: skip
            if tracemalloc >= 0:
                traced = ["-X", f"tracemalloc={tracemalloc}"] if tracemalloc else []
                cmd = [sys.executable, *traced, "-c", TRACER]
                env["PGVIP_SNAP"] = str(self.workdir / h / "snap")
            else:
                cmd = [str(Path(sys.executable).parent / "pgvip")]
            with open(self.workdir / h / "pgvip.log", "ab") as log:
                self.daemons[h] = subprocess.Popen(
                    ["ip", "netns", "exec", self.ns(h), *self.wrap(h), *cmd, "run", "--config",
                     str(config)],
                    stdout=log, stderr=subprocess.STDOUT, cwd="/", env=env,
                )  # fmt: skip

    def wrap(self, host: str) -> list[str]:
        """--wrap's command for `host`, e.g. heaptrack -o <workdir>/<host>/heaptrack."""
        return [w.format(host=host, workdir=self.workdir) for w in shlex.split(self.wrapper)]

    def config(self, host: str, priority: int) -> str:
        """The lab's settings (pgvip.lab.render), plus --set overrides ("" deletes)."""
        n = self.subnet.prefixlen
        doc: dict[str, dict[str, Any]] = {
            "patroni": {"url": "http://127.0.0.1:8008", "timeout": 1.0, "poll_interval": 0.1,
                        "rise": 1, "fall": 3},
            "vrrp": {"interface": "eth0", "advert_int": 20},
            "rw": {"vip": f"{self.rw_vip}/{n}", "vrid": 41, "priority": priority},
            "ro": {"vip": f"{self.ro_vip}/{n}", "vrid": 42, "port": 8008},
            "log": {"format": "json", "level": "info"},
        }  # fmt: skip
        for item in self.overrides:
            key, _, value = item.partition("=")
            section, _, name = key.partition(".")
            if not name:
                doc.pop(section, None)
            elif value == "":
                doc.get(section, {}).pop(name, None)
            else:
                doc.setdefault(section, {})[name] = json.loads(value)
        lines = []
        for section, body in doc.items():
            lines.append(f"[{section}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in body.items()]
        return "\n".join(lines) + "\n"

    # -- scrapes -------------------------------------------------------------------------

    def scrape(self, host: str, interval: float) -> None:
        """In a thread: enter the host's namespace and GET /status and /metrics forever."""
        fd = os.open(f"/run/netns/{self.ns(host)}", os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while not self._stop.wait(interval):
            for path in ("/status", "/metrics"):
                try:
                    with opener.open(f"http://127.0.0.1:8010{path}", timeout=2) as resp:
                        resp.read()
                    self.scrapes += 1
                except OSError:
                    self.scrape_errors += 1

    def footprint(self) -> dict[str, tuple[int, int]]:
        return {h: (rss_kib(p.pid), fds(p.pid)) for h, p in self.daemons.items()
                if p.poll() is None}  # fmt: skip

    def snapshot(self) -> None:
        for p in self.daemons.values():
            p.send_signal(signal.SIGUSR2)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rss_soak",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--prefix", default="pgr", help="namespace prefix")
    parser.add_argument("--subnet", default="10.20.41.0/24")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument(
        "--period",
        type=float,
        default=2.0,
        help="seconds between moves (0: the leader never moves)",
    )
    parser.add_argument(
        "--blackout-every",
        type=int,
        default=5,
        help="every N moves, no leader for one period (0: never)",
    )
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds before the baseline")
    parser.add_argument("--sample", type=float, default=30.0)
    parser.add_argument(
        "--scrape", type=float, default=0.5, help="seconds between scrapes (0: none)"
    )
    parser.add_argument(
        "--tracemalloc",
        type=int,
        default=-1,
        metavar="FRAMES",
        help="0: only pymalloc statistics at the baseline and the end",
    )
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=JSON",
        help="override a pgvip setting (KEY= deletes it, SECTION= the section)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the daemons, e.g. MALLOC_ARENA_MAX=1",
    )
    parser.add_argument(
        "--wrap",
        default="",
        metavar="COMMAND",
        help="run each daemon under COMMAND ({host}, {workdir} expand), e.g. "
        "'heaptrack -o {workdir}/{host}/heaptrack'",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="pgvip-rss-"))
    soak = Soak(args.prefix, IPv4Network(args.subnet), workdir)
    soak.overrides = args.set
    soak.wrapper = args.wrap
    soak.env = dict(item.partition("=")[::2] for item in args.env)
    samples: list[dict[str, Any]] = []
    moves = 0
    try:
        soak.build()
        soak.start(args.tracemalloc)
        for h in HOSTS if args.scrape > 0 else ():
            threading.Thread(target=soak.scrape, args=(h, args.scrape), daemon=True).start()
        started = time.monotonic()
        next_sample = next_move = started
        baseline_taken = False
        end = started + args.minutes * 60
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                fp = soak.footprint()
                samples.append({"t": round(now - started, 1), "moves": moves, "fp": fp})
                print(f"t={now - started:6.0f}s moves={moves:4d} " + "  ".join(
                    f"{h}: {r / 1024:.2f} MiB {f} fds" for h, (r, f) in fp.items()),
                    flush=True)  # fmt: skip
                next_sample += args.sample
                if baseline_taken and args.tracemalloc >= 0:
                    soak.snapshot()
            if not baseline_taken and now - started >= args.warmup:
                baseline_taken = True
                base = {"t": round(now - started, 1), "moves": moves, "fp": soak.footprint()}
                if args.tracemalloc >= 0:
                    soak.snapshot()
            if args.period > 0 and now >= next_move:
                next_move += args.period
                moves += 1
                if args.blackout_every and moves % args.blackout_every == 0:
                    soak.set_leader(None)
                else:
                    current = soak.leader or HOSTS[-1]
                    soak.set_leader(HOSTS[(HOSTS.index(current) + 1) % len(HOSTS)])
            time.sleep(0.1)
        final = {"t": round(time.monotonic() - started, 1), "moves": moves,
                 "fp": soak.footprint()}  # fmt: skip
        if args.tracemalloc >= 0:
            soak.snapshot()
            time.sleep(5)
        dead = [h for h, p in soak.daemons.items() if p.poll() is not None]
    finally:
        soak.down()
    print(f"scrapes {soak.scrapes}, failed {soak.scrape_errors}; daemons exited: {dead or 'none'}")
    if baseline_taken:
        span = final["moves"] - base["moves"]
        for h, (rss, fd_count) in final["fp"].items():
            r0, f0 = base["fp"][h]
            grow = rss - r0
            print(
                f"{h}: RSS {r0 / 1024:.2f} -> {rss / 1024:.2f} MiB (+{grow} KiB over {span} "
                f"moves, {100 * grow / max(span, 1):.0f} KiB/100 moves), fds {f0} -> {fd_count}"
            )
        if args.tracemalloc >= 0:
            compare_types(workdir, args.top)
        if args.tracemalloc > 0:
            compare(workdir, args.top)
    if args.keep:
        print(f"work directory: {workdir}")
    else:
        subprocess.run(["rm", "-rf", str(workdir)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
