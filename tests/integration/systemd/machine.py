"""A Debian 12 root booted with systemd as PID 1 (systemd-nspawn -b), with pgvip installed the
way a package would install it, for the tests that run deploy/pgvip.service for real.

Layers:
- the OS root: debootstrap + the apt packages below, cached in
  /var/cache/pgvip/systemd-root/os-<key>/ (PGVIP_SYSTEMD_CACHE), rebuilt when they change
  (~35-145 s here, mostly downloads);
- the base root: a copy of that plus a venv with pgvip's dependencies (which also runs the
  stand-in Patroni), rebuilt when pyproject.toml changes (~10 s);
- per boot: an overlayfs over the base (the base stays pristine), into which the
  installer puts pgvip (`DebInstall`, or `WheelInstall`), the stand-in Patroni as
  `patroni.service`, and whatever files the test writes.

Every nspawn runs in a cgroup of its own (this host has no systemd: without one, nspawn
would create `payload/` in the root cgroup, shared by every container on the machine).
The container has its own network namespace with only `lo` until a test adds links.

Both installers leave the same layout (/usr/bin/pgvip, /lib/systemd/system/pgvip.service,
/etc/pgvip/, user pgvip, the unit not enabled), so the tests do not care which ran.
By default they run on the Debian package (tests/integration/debian_package.py builds it
once per session; PGVIP_DEB=… names one built already); PGVIP_SYSTEMD_INSTALL=wheel
installs a wheel of this checkout instead (quicker while editing pgvip).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
CACHE = Path(os.environ.get("PGVIP_SYSTEMD_CACHE", "/var/cache/pgvip/systemd-root"))
SUITE = "bookworm"
MIRROR = os.environ.get("PGVIP_SYSTEMD_MIRROR", "http://deb.debian.org/debian")
# systemd itself, what pgvip runs (nft, ip) or imports, and keepalived for a comparison of
# `systemd-analyze security` scores.
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "iproute2", "nftables", "procps",
    "python3", "python3-venv", "keepalived", "ca-certificates",
    "adduser", "libpq5",  # the Debian package's Depends, so that installing it needs no download
)  # fmt: skip
VENV = "/opt/pgvip/venv"  # where WheelInstall puts pgvip; /usr/bin/pgvip points into it
UNIT_PATH = "/lib/systemd/system/pgvip.service"  # where the Debian package puts the unit
BASE_VERSION = "1"  # bump when the base recipe changes in a way the key does not see
# Hybrid (this machine): cgroup2 on unified/ and systemd's own v1 tree. Pure cgroup2: the top.
CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
if Path("/sys/fs/cgroup/cgroup.controllers").exists():
    CGROUP_ROOTS = (Path("/sys/fs/cgroup"),)


class MachineError(RuntimeError):
    """The root could not be built or the container did not boot."""


def run(cmd: Sequence[str], *, timeout: float = 600, **kw: object) -> str:
    """Run a host command; its output on failure is in the exception."""
    res = subprocess.run(
        list(cmd), capture_output=True, text=True, timeout=timeout, check=False, **kw
    )  # type: ignore[call-overload]
    if res.returncode != 0:
        raise MachineError(f"{' '.join(cmd)} exited {res.returncode}:\n{res.stdout}{res.stderr}")
    return str(res.stdout)


def missing_tools() -> list[str]:
    return [t for t in ("systemd-nspawn", "debootstrap", "nsenter") if shutil.which(t) is None]


@contextlib.contextmanager
def own_cgroup(name: str) -> Iterator[list[Path]]:
    """Cgroups named `name` under each hierarchy nspawn uses; removed (deepest first) after."""
    made = []
    for root in CGROUP_ROOTS:
        if root.is_dir():
            path = root / name
            path.mkdir(exist_ok=True)
            made.append(path)
    try:
        yield made
    finally:
        for path in made:
            for sub in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                path.rmdir()


def _enter(cgroups: list[Path]) -> None:
    # In the child between fork and exec: join the cgroups before nspawn reads its own.
    for path in cgroups:
        (path / "cgroup.procs").write_text(str(os.getpid()))


def nspawn(root: Path, *args: str, timeout: float = 600, network: bool = True) -> str:
    """Run one command in `root` (no boot), with the host's network when `network`."""
    name = f"pgvip-sd-run-{os.getpid()}"
    cmd = ["systemd-nspawn", "-q", "-D", str(root), "--register=no", "--keep-unit", "--pipe"]
    cmd += [] if network else ["--private-network"]
    with own_cgroup(name) as cgroups:
        return run([*cmd, "--", *args], timeout=timeout, preexec_fn=lambda: _enter(cgroups))


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps([BASE_VERSION, *parts]).encode()).hexdigest()[:16]


def os_key() -> str:
    """The debootstrapped root: the suite and the packages."""
    return "os-" + _key(SUITE, MIRROR, PACKAGES)


def base_key() -> str:
    """The base root: that, plus the venv of pgvip's dependencies."""
    return _key(os_key(), (REPO / "pyproject.toml").read_text())


def build_wheel(out: Path) -> Path:
    """pgvip's wheel from a copy of this checkout (an in-tree build would leave build/
    behind, whose stale modules a later wheel would ship)."""
    src = out / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
        "results"))  # fmt: skip
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)])
    shutil.rmtree(src)
    wheels = sorted(out.glob("pgvip-*.whl"))
    if not wheels:
        raise MachineError(f"no wheel in {out}")
    return wheels[-1]


def base_root(progress: object = print) -> Path:
    """The cached base root, built first if needed (under a lock: sessions may race).
    A change of pyproject.toml rebuilds only the venv, on a copy of the debootstrapped root."""
    say = progress if callable(progress) else print
    key, os_dir = base_key(), CACHE / os_key()
    root = CACHE / key / "root"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (CACHE / key / "done").exists():
            return root
        started = time.monotonic()
        if not (os_dir / "done").exists():
            shutil.rmtree(os_dir, ignore_errors=True)
            os_dir.mkdir()
            say(f"systemd root: debootstrap {SUITE} into {os_dir / 'root'} ...")
            run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                 SUITE, str(os_dir / "root"), MIRROR], timeout=900)  # fmt: skip
            # Empty: systemd makes a fresh machine-id at every boot of an overlay.
            (os_dir / "root/etc/machine-id").write_text("")
            run(["chroot", str(os_dir / "root"), "apt-get", "clean"])
            (os_dir / "done").write_text(str(time.time()))
        shutil.rmtree(CACHE / key, ignore_errors=True)
        (CACHE / key).mkdir()
        run(["cp", "-a", "--reflink=auto", str(os_dir / "root"), str(root)])
        # The dependencies come as wheels fetched by the host's pip (with its index, proxy
        # and CA settings; the same CPython 3.11 as Debian 12's): the root needs no index.
        with tempfile.TemporaryDirectory(dir=root / "var/tmp") as tmp:
            wheel = build_wheel(Path(tmp))
            run([sys.executable, "-m", "pip", "wheel", "-q", "-w", tmp, str(wheel)])
            inside = "/" + str(Path(tmp).relative_to(root))
            nspawn(root, "/bin/sh", "-ec",
                   f"python3 -m venv {VENV} && {VENV}/bin/pip install -q --no-index "
                   f"--find-links {inside} pgvip", network=False)  # fmt: skip
        say(f"systemd root: built in {time.monotonic() - started:.0f} s")
        (CACHE / key / "done").write_text(str(time.time()))
        for old in CACHE.iterdir():  # older bases are garbage now
            if old.is_dir() and old.name not in (key, os_dir.name):
                shutil.rmtree(old, ignore_errors=True)
    return root


STANDIN_UNIT = """\
[Unit]
Description=Patroni REST stand-in for the pgvip systemd tests
[Service]
ExecStart={python} /usr/local/lib/pgvip-test/standin_patroni.py --listen 127.0.0.1:8008 \
--state /etc/pgvip-test/patroni-state.json
"""


class WheelInstall:
    """pgvip from a wheel of this checkout, laid out as the Debian package lays it out:
    /usr/bin/pgvip, the unit at /lib/systemd/system, /etc/pgvip/, user and group pgvip."""

    name = "wheel"

    def __init__(self, wheel: Path) -> None:
        self.wheel = wheel

    def install(self, root: Path) -> None:
        shutil.copy(self.wheel, root / "var/tmp" / self.wheel.name)
        nspawn(root, "/bin/sh", "-ec",
               f"{VENV}/bin/pip install -q --no-deps --force-reinstall /var/tmp/{self.wheel.name}"
               f"; rm /var/tmp/{self.wheel.name}; ln -sf {VENV}/bin/pgvip /usr/bin/pgvip"
               "; getent passwd pgvip >/dev/null || adduser --system --group --no-create-home"
               " --home /nonexistent pgvip; mkdir -p /etc/pgvip", network=False)  # fmt: skip
        unit = (REPO / "deploy/pgvip.service").read_text()
        (root / UNIT_PATH.lstrip("/")).write_text(
            unit.replace("/usr/local/bin/pgvip", "/usr/bin/pgvip")
        )
        shutil.copy(REPO / "deploy/pgvip.toml", root / "etc/pgvip/pgvip.toml.example")


class DebInstall:
    """pgvip from the Debian package: `apt-get install ./pgvip_*.deb` (with the host's
    network, for its dependencies)."""

    name = "deb"

    def __init__(self, deb: Path) -> None:
        self.deb = deb

    def install(self, root: Path) -> None:
        shutil.copy(self.deb, root / "var/tmp" / self.deb.name)
        deb = f"/var/tmp/{self.deb.name}"
        # The base root has every dependency: apt needs the index only if that changed.
        nspawn(root, "/bin/sh", "-ec",
               f"export DEBIAN_FRONTEND=noninteractive; apt-get install -y -q {deb} "
               f"|| {{ apt-get update -q && apt-get install -y -q {deb}; }}; rm {deb}",
               timeout=900)  # fmt: skip
        # The tests start the unit themselves, after writing its config.
        for wants in root.glob("etc/systemd/system/*.wants/pgvip.service"):
            wants.unlink()


def installer(work: Path) -> WheelInstall | DebInstall:
    """The Debian package (built once per test session, or $PGVIP_DEB), unless
    PGVIP_SYSTEMD_INSTALL=wheel asks for the quicker wheel of this checkout."""
    if os.environ.get("PGVIP_SYSTEMD_INSTALL") == "wheel":
        return WheelInstall(build_wheel(work))
    from tests.integration.debian_package import built_deb

    return DebInstall(built_deb())


@dataclass
class Machine:
    """A booted container. `sh()` runs a command inside it (all its namespaces), `netns`
    names its network namespace for `ip netns exec` and pyroute2 from the host."""

    name: str
    root: Path
    nspawn: subprocess.Popen[bytes]
    leader: int
    log_path: Path
    boot_seconds: float = 0.0
    netns: str = ""

    def sh(self, script: str, *, check: bool = True, timeout: float = 30) -> str:
        res = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "/bin/sh", "-c", script],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        if check and res.returncode != 0:
            raise MachineError(f"in {self.name}: {script!r} exited {res.returncode}:\n"
                               f"{res.stdout}{res.stderr}")  # fmt: skip
        return res.stdout

    def host_net(self, *cmd: str) -> str:
        """A host binary (curl, ...) in the container's network namespace only."""
        return run(["nsenter", "-t", str(self.leader), "-n", *cmd], timeout=30)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str, since_cursor: str | None = None) -> list[dict[str, object]]:
        after = f" --after-cursor='{since_cursor}'" if since_cursor else ""
        out = self.sh(f"journalctl -q -u {unit} -o json --no-pager{after}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def cursor(self) -> str:
        out = self.sh("journalctl -q -n 1 -o json --no-pager")
        lines = [line for line in out.splitlines() if line.strip()]
        return str(json.loads(lines[-1])["__CURSOR"]) if lines else ""

    def write(self, path: str, text: str) -> None:
        """Write a file inside the running container (through its root on the host)."""
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def _leader(nspawn_pid: int, timeout: float) -> int:
    """The container's PID 1, seen from the host: the child of nspawn that runs systemd
    (nspawn's first child is a short-lived helper that forks it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            for task in Path(f"/proc/{nspawn_pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                        return int(child)
        time.sleep(0.02)
    raise MachineError("systemd-nspawn started no container")


@contextlib.contextmanager
def booted(name: str, prepare: object = None, *, boot_timeout: float = 60) -> Iterator[Machine]:
    """Boot a container `name` on an overlay of the base root with pgvip installed;
    `prepare(root)` may write files first. Shut down and removed afterwards, even on failure."""
    base = base_root()
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir="/var/tmp"))
    merged, upper, scratch = work / "root", work / "upper", work / "work"
    for d in (merged, upper, scratch):
        d.mkdir()
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={base},upperdir={upper},workdir={scratch}", str(merged)])  # fmt: skip
    netns_link = Path("/run/netns") / name
    try:
        installer(work).install(merged)
        install_standin(merged)
        if callable(prepare):
            prepare(merged)
        log_path = work / "console.log"
        with own_cgroup(name) as cgroups, open(log_path, "wb") as log:
            started = time.monotonic()
            proc = subprocess.Popen(
                ["systemd-nspawn", "-q", "-D", str(merged), "-b", "--private-network",
                 "--register=no", "--keep-unit", f"--machine={name}", "--console=passive"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=lambda: _enter(cgroups), start_new_session=True,
            )  # fmt: skip
            leader = 0
            try:
                leader = _leader(proc.pid, 10)
                machine = Machine(name, merged, proc, leader, log_path)
                _wait_booted(machine, boot_timeout)
                machine.boot_seconds = time.monotonic() - started
                netns_link.parent.mkdir(exist_ok=True)
                netns_link.touch()
                run(["mount", "--bind", f"/proc/{machine.leader}/ns/net", str(netns_link)])
                machine.netns = name
                yield machine
            finally:
                # Inside own_cgroup: its cgroups can go only once the container is gone.
                _shutdown(proc, leader)
    finally:
        if netns_link.exists():
            subprocess.run(["umount", str(netns_link)], capture_output=True, check=False)
            netns_link.unlink(missing_ok=True)
        subprocess.run(["umount", str(merged)], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


def install_standin(root: Path) -> None:
    target = root / "usr/local/lib/pgvip-test"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "tests/integration/standin_patroni.py", target / "standin_patroni.py")
    (root / "etc/pgvip-test").mkdir(exist_ok=True)
    (root / "etc/systemd/system/patroni.service").write_text(
        STANDIN_UNIT.format(python=f"{VENV}/bin/python")
    )


def _wait_booted(machine: Machine, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if machine.nspawn.poll() is not None:
            break
        res = subprocess.run(
            ["nsenter", "-t", str(machine.leader), "-a", "systemctl", "is-system-running",
             "--wait"], capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        last = res.stdout.strip() + res.stderr.strip()
        if last in ("running", "degraded"):
            return
        time.sleep(0.1)
    tail = machine.log_path.read_text(errors="replace")[-3000:]
    raise MachineError(f"{machine.name} did not boot ({last!r}); console:\n{tail}")


def _shutdown(proc: subprocess.Popen[bytes], leader: int, timeout: float = 15) -> None:
    """SIGTERM makes nspawn halt the container cleanly. If nspawn is still there after
    `timeout`, or went without its container (seen when stopped mid-boot), SIGKILL the
    container's PID 1, which takes every process of its PID namespace with it."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if leader and _is_container_init(leader):
        os.kill(leader, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{leader}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)


def _is_container_init(pid: int) -> bool:
    """Still the container's systemd (not a recycled PID): PID 1 of its own namespace."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    nspid = next(
        (line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), []
    )
    return nspid[-1:] == ["1"] and len(nspid) > 1
