#!/usr/bin/env python3
"""Run one command under a Linux kernel that has IPVS (Debian's 6.1, as modules) in a qemu guest.

The guest boots an uncompressed vmlinux (PVH entry) and a tiny busybox initramfs, both built
here and cached per kernel version; it sees the host's / read-only over 9p and has no network
device, so whatever it runs cannot reach anything outside the guest. Stdlib only.

    vm.py check                      are qemu, busybox and a kernel with IPVS installed?
    vm.py build                      build (or reuse) the cached guest image, print its paths
    vm.py run [options] -- CMD ...   run CMD in the guest; exit with its status

Environment: PGVIP_IPVS_VM_CACHE (default /var/cache/pgvip/ipvs-vm), PGVIP_IPVS_VM_KERNEL
(a kernel version under /boot; default the newest one whose modules include ip_vs).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
INIT_SCRIPT = HERE / "init.sh"
DEFAULT_CACHE = Path("/var/cache/pgvip/ipvs-vm")
SETUP_HINT = (
    "run scripts/setup.sh as root "
    "(it installs qemu-system-x86 linux-image-amd64 busybox-static ipvsadm)"
)
# What the guest needs before it can mount the host's /: virtio PCI transport and 9p.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p")
BUSYBOX = Path("/bin/busybox")
QEMU = "qemu-system-x86_64"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Bump when the image layout changes, so cached images are rebuilt.
IMAGE_FORMAT = 2

READY = re.compile(r"PGVIP-VM-READY (\S+)")
EXIT = re.compile(r"PGVIP-VM-EXIT=(\d+)")
FAILED = re.compile(r"PGVIP-VM-FAILED (.*)")
PRINTK = re.compile(r"\[\s*\d+\.\d+\] ")


class VmError(RuntimeError):
    """The guest could not be built, booted or finished; the text says why and what to do."""


@dataclass(frozen=True)
class GuestImage:
    kernel_version: str
    vmlinux: Path
    initramfs: Path


@dataclass(frozen=True)
class VmResult:
    """One guest run. Times are host seconds: boot = qemu start to the guest's READY line."""

    exit_code: int
    output: str  # the guest console, marker lines removed
    build_s: float
    boot_s: float
    command_s: float
    total_s: float
    guest_uptime_at_ready: float
    kernel_version: str

    def timings(self) -> dict[str, float]:
        return {
            "build_s": round(self.build_s, 2),
            "boot_s": round(self.boot_s, 2),
            "command_s": round(self.command_s, 2),
            "total_s": round(self.total_s, 2),
        }


# -- finding the kernel ----------------------------------------------------------------
def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.-]", version)]


def find_kernel_version(boot: Path = Path("/boot"), modules: Path = Path("/lib/modules")) -> str:
    """The newest kernel under /boot whose modules have IPVS (or $PGVIP_IPVS_VM_KERNEL)."""
    wanted = os.environ.get("PGVIP_IPVS_VM_KERNEL")
    candidates = (
        [wanted] if wanted else [p.name.removeprefix("vmlinuz-") for p in boot.glob("vmlinuz-*")]
    )
    usable = [
        v
        for v in candidates
        if (boot / f"vmlinuz-{v}").is_file()
        and (modules / v / "kernel/net/netfilter/ipvs/ip_vs.ko").is_file()
    ]
    if not usable:
        what = f"kernel {wanted!r} (PGVIP_IPVS_VM_KERNEL)" if wanted else "a kernel"
        raise VmError(
            f"no {what} with IPVS modules: need {boot}/vmlinuz-KVER and "
            f"{modules}/KVER/kernel/net/netfilter/ipvs/ip_vs.ko; {SETUP_HINT}"
        )
    return max(usable, key=_version_key)


def preflight(kernel_version: str | None = None) -> str:
    """Check the host tools and the kernel; the kernel version to boot, or VmError."""
    missing = [t for t in (QEMU, "modprobe", "timeout") if shutil.which(t) is None]
    if not BUSYBOX.is_file():
        missing.append(str(BUSYBOX))
    if missing:
        raise VmError(f"missing {', '.join(missing)}: {SETUP_HINT}")
    if kernel_version is None:
        return find_kernel_version()
    if not Path(f"/boot/vmlinuz-{kernel_version}").is_file():
        raise VmError(f"no /boot/vmlinuz-{kernel_version}: {SETUP_HINT}")
    return kernel_version


# -- building the image ----------------------------------------------------------------
def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """The ELF kernel inside a bzImage: qemu boots an ELF through its PVH note, not a bzImage."""
    for magic, unpack in ((b"\xfd7zXZ\x00", _unxz), (b"\x1f\x8b\x08", _gunzip)):
        start = vmlinuz.find(magic)
        while start != -1:
            data = unpack(vmlinuz[start:])
            if data is not None and data.startswith(b"\x7fELF"):
                return data
            start = vmlinuz.find(magic, start + 1)
    raise VmError("no xz or gzip compressed ELF kernel found in the vmlinuz image")


def _unxz(data: bytes) -> bytes | None:
    # The stream is followed by other bzImage data, which the decompressor leaves unused.
    try:
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data)
    except lzma.LZMAError:
        return None


def _gunzip(data: bytes) -> bytes | None:
    try:
        return gzip.GzipFile(fileobj=io.BytesIO(data)).read()
    except (OSError, EOFError):
        return None


def boot_module_paths(kernel_version: str, modules: Sequence[str] = BOOT_MODULES) -> list[Path]:
    """The .ko files to insmod, dependencies first, as `modprobe --show-depends` orders them."""
    paths: list[Path] = []
    for module in modules:
        proc = subprocess.run(
            ["modprobe", "-S", kernel_version, "--show-depends", module],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise VmError(
                f"modprobe cannot resolve {module} for {kernel_version}: "
                f"{proc.stderr.strip() or proc.returncode}; {SETUP_HINT}"
            )
        for line in proc.stdout.splitlines():
            words = line.split()
            # "builtin X" lines need nothing loaded.
            if len(words) >= 2 and words[0] == "insmod" and Path(words[1]) not in paths:
                paths.append(Path(words[1]))
    return paths


class Cpio:
    """A minimal writer of the "newc" cpio format the kernel unpacks as its initramfs."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._ino = 1

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        fields = (self._ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        self._ino += 1
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self._parts.append(_pad4(header + name.encode() + b"\0"))
        self._parts.append(_pad4(data))

    def directory(self, name: str) -> None:
        self._entry(name, 0o040755)

    def file(self, name: str, data: bytes, executable: bool = False) -> None:
        self._entry(name, 0o100755 if executable else 0o100644, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, 0o120777, target.encode())

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._entry(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        return b"".join(self._parts)


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def make_initramfs(init_script: bytes, busybox: bytes, modules: Sequence[Path]) -> bytes:
    archive = Cpio()
    for directory in ("bin", "dev", "proc", "sys", "host", "hosttmp", "hostrun", "job", "modules"):
        archive.directory(directory)
    # The kernel opens /dev/console for PID 1's stdio before anything is mounted.
    archive.char_device("dev/console", 5, 1)
    archive.file("bin/busybox", busybox, executable=True)
    archive.symlink("bin/sh", "busybox")
    archive.file("init", init_script, executable=True)
    for path in modules:
        archive.file(f"modules/{path.name}", path.read_bytes())
    archive.file("modules/order", "".join(f"{p.name}\n" for p in modules).encode())
    return archive.finish()


def cache_dir() -> Path:
    return Path(os.environ.get("PGVIP_IPVS_VM_CACHE", str(DEFAULT_CACHE)))


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Two test runs may build at once; one builds, the other then finds the cache.
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _stamp(path: Path) -> str:
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def build(kernel_version: str | None = None, cache: Path | None = None) -> GuestImage:
    """The guest image for `kernel_version`, from the cache when its inputs have not changed."""
    kver = preflight(kernel_version)
    directory = (cache or cache_dir()) / kver
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise VmError(f"cannot create the image cache {directory}: {exc}") from exc
    vmlinuz = Path(f"/boot/vmlinuz-{kver}")
    modules = boot_module_paths(kver)
    init_script = INIT_SCRIPT.read_bytes()
    inputs = [str(IMAGE_FORMAT), _stamp(vmlinuz), _stamp(BUSYBOX)]
    inputs += [_stamp(m) for m in modules] + [hashlib.sha256(init_script).hexdigest()]
    key = hashlib.sha256("\n".join(inputs).encode()).hexdigest()[:16]
    vmlinux = directory / "vmlinux"
    initramfs = directory / f"initramfs-{key}.cpio"
    with _locked(directory):
        kernel_key = directory / "vmlinux.key"
        wanted_kernel_key = _stamp(vmlinuz)
        if (
            not vmlinux.is_file()
            or not kernel_key.is_file()
            or kernel_key.read_text() != wanted_kernel_key
        ):
            _write_atomically(vmlinux, extract_vmlinux(vmlinuz.read_bytes()))
            kernel_key.write_text(wanted_kernel_key)
        if not initramfs.is_file():
            _write_atomically(initramfs, make_initramfs(init_script, BUSYBOX.read_bytes(), modules))
            for old in directory.glob("initramfs-*.cpio"):
                if old != initramfs:
                    old.unlink(missing_ok=True)
    return GuestImage(kver, vmlinux, initramfs)


# -- running ---------------------------------------------------------------------------
def qemu_argv(
    image: GuestImage, job_dir: Path, *, memory_mb: int, quiet: bool, cpus: int = 1
) -> list[str]:
    append = "console=ttyS0 panic=-1 rdinit=/init"
    # Level 1 keeps kernel messages from splitting the command's output lines; panics still show.
    append += " quiet loglevel=1" if quiet else ""
    return [
        QEMU,
        "-nodefaults",
        "-no-user-config",
        "-machine", "pc",
        "-accel", "tcg",  # /dev/kvm here is PVM: a stock kernel hangs under -accel kvm
        "-cpu", "max",
        "-smp", str(cpus),  # more than 1: multi-threaded TCG, one host thread per vCPU
        "-m", f"{memory_mb}M",
        "-display", "none",
        "-monitor", "none",
        "-serial", "stdio",
        "-no-reboot",
        "-kernel", str(image.vmlinux),
        "-initrd", str(image.initramfs),
        "-append", append,
        "-fsdev", "local,id=hostroot,path=/,readonly=on,security_model=none,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev", f"local,id=job,path={job_dir},security_model=none",
        "-device", "virtio-9p-pci,fsdev=job,mount_tag=job",
    ]  # fmt: skip


def command_script(argv: Sequence[str], cwd: str | None, env: Mapping[str, str]) -> str:
    """The guest's command.sh: a clean environment, the working directory, then exec argv."""
    base = {"PATH": GUEST_PATH, "HOME": "/root", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    lines = ["#!/bin/sh"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in {**base, **env}.items()]
    if cwd:
        lines.append(f"cd {shlex.quote(cwd)} || exit 126")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines) + "\n"


def hidden_paths(argv: Sequence[str], cwd: str | None, env: Mapping[str, str]) -> list[str]:
    """Host directories the command names that the guest's own /tmp and /run would hide.

    Looks at argv's absolute paths, the working directory and PYTHONPATH; a file stands for
    its directory. (A checkout under /tmp must stay visible to a test run from it.)
    """
    candidates = [a for a in argv if a.startswith("/")]
    candidates += [cwd] if cwd else []
    candidates += [p for p in env.get("PYTHONPATH", "").split(":") if p.startswith("/")]
    keep: list[str] = []
    for candidate in candidates:
        path = Path(candidate).resolve()
        if path.is_file():
            path = path.parent
        hidden = path.parts[1:2] in (("tmp",), ("run",)) and len(path.parts) > 2
        if hidden and path.is_dir() and str(path) not in keep:
            keep.append(str(path))
    return keep


def run(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 180.0,
    memory_mb: int = 256,
    cpus: int = 1,
    kernel_version: str | None = None,
    quiet: bool = True,
    echo: Callable[[str], None] | None = None,
) -> VmResult:
    """Boot the guest, run argv there (host paths, read-only /), and return its exit status.

    Raises VmError when the guest cannot be built or booted, fails before running argv, or
    does not finish within `timeout` seconds (qemu is then killed). `echo` gets each line.
    """
    if not argv:
        raise VmError("no command to run in the guest")
    for key in env or {}:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise VmError(f"bad environment variable name {key!r}")
    started = time.monotonic()
    image = build(kernel_version)
    built = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="pgvip-ipvs-vm-") as job:
        job_dir = Path(job)
        (job_dir / "command.sh").write_text(command_script(argv, cwd, env or {}))
        (job_dir / "keep").write_text("".join(f"{p}\n" for p in hidden_paths(argv, cwd, env or {})))
        cmd = ["timeout", "-k", "5", str(int(timeout) + 1)]
        cmd += qemu_argv(image, job_dir, memory_mb=memory_mb, quiet=quiet, cpus=cpus)
        return _boot(cmd, image, started, built, timeout, echo)


def _boot(
    cmd: list[str],
    image: GuestImage,
    started: float,
    built: float,
    timeout: float,
    echo: Callable[[str], None] | None,
) -> VmResult:
    lines: list[str] = []
    ready_at: float | None = None
    uptime = 0.0
    exit_code: int | None = None
    exit_at = 0.0
    failure: str | None = None
    boot_start = time.monotonic()
    try:
        # Its own session, so the watchdog can kill `timeout` and qemu together: killing only
        # `timeout` would orphan qemu, which keeps the pipe open and the reader blocked.
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    except OSError as exc:
        raise VmError(f"cannot start {QEMU}: {exc}; {SETUP_HINT}") from exc
    timer = threading.Timer(timeout, _kill_group, (proc,))
    timer.start()
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip("\r\n").replace("\r", "")
            now = time.monotonic()
            if (m := READY.search(line)) and ready_at is None:
                ready_at, uptime = now, float(m.group(1))
                line = line[: m.start()]
            elif (m := EXIT.search(line)) and exit_code is None:
                exit_code, exit_at = int(m.group(1)), now
                line = line[: m.start()]
            elif m := FAILED.search(line):
                failure = m.group(1)
            elif exit_code is not None and PRINTK.match(line):
                continue  # "reboot: Power down" and the like, after the command ended
            if line:
                lines.append(line)
                if echo is not None:
                    echo(line)
        status = proc.wait()
    finally:
        timer.cancel()
        _kill_group(proc)
        proc.wait()
    ended = time.monotonic()
    tail = "\n".join(lines[-30:])
    if failure is not None:
        raise VmError(f"the guest failed to set up: {failure}\n--- guest console ---\n{tail}")
    if exit_code is None:
        why = (
            f"did not finish within {timeout:.0f} s (killed)"
            if ended - boot_start >= timeout - 0.5 or status in (-9, 124, 137)
            else f"stopped without an exit marker (qemu status {status})"
        )
        stage = "before the command started" if ready_at is None else "while the command ran"
        raise VmError(f"the guest {why} {stage}\n--- guest console ---\n{tail}")
    assert ready_at is not None
    return VmResult(
        exit_code=exit_code,
        output="\n".join(lines),
        build_s=built - started,
        boot_s=ready_at - boot_start,
        command_s=exit_at - ready_at,
        total_s=ended - started,
        guest_uptime_at_ready=uptime,
        kernel_version=image.kernel_version,
    )


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the session `proc` leads (timeout + qemu); a no-op once it has been reaped."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("check", help="check that the host can run the guest")
    sub.add_parser("build", help="build or reuse the cached guest image")
    run_p = sub.add_parser("run", help="run a command in the guest")
    run_p.add_argument("--timeout", type=float, default=180.0, help="seconds (default 180)")
    run_p.add_argument("--memory", type=int, default=256, help="guest RAM in MiB (default 256)")
    run_p.add_argument("--cpus", type=int, default=1, help="guest vCPUs (default 1)")
    run_p.add_argument("--cwd", help="working directory in the guest (a host path)")
    run_p.add_argument("--env", action="append", default=[], metavar="K=V")
    run_p.add_argument("--verbose-kernel", action="store_true", help="show kernel messages")
    run_p.add_argument("command", nargs="+")
    opts = parser.parse_args(args)
    try:
        if opts.action == "check":
            print(f"ok: kernel {preflight()}")
            return 0
        if opts.action == "build":
            image = build()
            print(json.dumps({k: str(v) for k, v in image.__dict__.items()}))
            return 0
        env = dict(item.split("=", 1) for item in opts.env if "=" in item)
        result = run(
            opts.command,
            cwd=opts.cwd,
            env=env,
            timeout=opts.timeout,
            memory_mb=opts.memory,
            cpus=opts.cpus,
            quiet=not opts.verbose_kernel,
            echo=print,
        )
    except VmError as exc:
        print(f"vm.py: {exc}", file=sys.stderr)
        return 125
    print(f"vm.py: {json.dumps({'exit': result.exit_code, **result.timings()})}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
