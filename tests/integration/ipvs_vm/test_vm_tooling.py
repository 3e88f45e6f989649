"""The guest tooling itself (scripts/ipvs-vm/vm.py): its image parts, its error messages, and a
guest run's exit status, isolation and timeout.
"""

from __future__ import annotations

import json
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType

import pytest

from tests.integration.ipvs_vm.conftest import TIMINGS

pytestmark = pytest.mark.integration


def test_missing_qemu_fails_with_the_setup_hint(
    vm: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vm, "QEMU", "qemu-system-pgvip-missing")
    with pytest.raises(vm.VmError, match=r"missing qemu-system-pgvip-missing: .*scripts/setup\.sh"):
        vm.preflight()


def test_kernel_choice_needs_ipvs_modules_and_sorts_versions(
    vm: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGVIP_IPVS_VM_KERNEL", raising=False)
    boot, modules = tmp_path / "boot", tmp_path / "modules"
    boot.mkdir()
    with pytest.raises(vm.VmError, match=r"scripts/setup\.sh"):
        vm.find_kernel_version(boot, modules)
    for version, has_ipvs in (
        ("6.1.0-9-amd64", True),
        ("6.1.0-10-amd64", True),
        ("6.9.0-1", False),
    ):
        (boot / f"vmlinuz-{version}").write_bytes(b"")
        if has_ipvs:
            ko = modules / version / "kernel/net/netfilter/ipvs/ip_vs.ko"
            ko.parent.mkdir(parents=True)
            ko.write_bytes(b"")
    # -10 is newer than -9 (not a string sort); 6.9 is newer still but has no IPVS.
    assert vm.find_kernel_version(boot, modules) == "6.1.0-10-amd64"
    monkeypatch.setenv("PGVIP_IPVS_VM_KERNEL", "6.9.0-1")
    with pytest.raises(vm.VmError, match="PGVIP_IPVS_VM_KERNEL"):
        vm.find_kernel_version(boot, modules)


def test_vmlinux_is_found_inside_a_bzimage(vm: ModuleType) -> None:
    elf = b"\x7fELF" + os.urandom(4096)
    decoy = lzma.compress(b"not a kernel", format=lzma.FORMAT_XZ)
    image = b"MZ setup code" + decoy + b"\0" * 7 + lzma.compress(elf, format=lzma.FORMAT_XZ)
    assert vm.extract_vmlinux(image + b"trailing bzImage data") == elf
    with pytest.raises(vm.VmError, match="no xz or gzip"):
        vm.extract_vmlinux(b"MZ" + decoy)


def test_initramfs_is_a_newc_archive_the_cpio_tool_reads(vm: ModuleType, tmp_path: Path) -> None:
    module = tmp_path / "virtio.ko"
    module.write_bytes(b"module bytes")
    archive = vm.make_initramfs(b"#!/bin/sh\necho hi\n", b"busybox bytes", [module])
    listing = subprocess.run(
        ["cpio", "-itv", "--quiet"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    entries = {
        line.split()[-1] if "->" not in line else line.split()[-3]: line
        for line in listing.splitlines()
    }
    assert set(entries) >= {"init", "bin/busybox", "bin/sh", "dev/console", "modules/virtio.ko"}
    assert entries["init"].startswith("-rwxr-xr-x")
    assert entries["dev/console"].startswith("c")
    assert entries["bin/sh"].startswith("l") and entries["bin/sh"].endswith("-> busybox")
    files = tmp_path / "unpacked"
    files.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=archive, cwd=files, check=True)
    assert (files / "modules/order").read_text() == "virtio.ko\n"
    assert (files / "modules/virtio.ko").read_bytes() == b"module bytes"


def test_command_script_quotes_argv_and_sets_env_and_cwd(vm: ModuleType, tmp_path: Path) -> None:
    argv = [
        sys.executable,
        "-c",
        "import json, os, sys; e = os.environ; "
        "print(json.dumps([os.getcwd(), sys.argv[1:], e['PGVIP_X'], e['PATH']]))",
        "a b",
        "it's",
        "$HOME",
        "",
    ]  # noqa: E501
    script = tmp_path / "command.sh"
    script.write_text(vm.command_script(argv, str(tmp_path), {"PGVIP_X": "x y'z"}))
    out = subprocess.run(["/bin/sh", str(script)], capture_output=True, text=True, check=True)
    cwd, args, x, path = json.loads(out.stdout)
    assert cwd == str(tmp_path)
    assert args == ["a b", "it's", "$HOME", ""]
    assert x == "x y'z"
    assert path == vm.GUEST_PATH


def test_guest_status_read_only_root_and_no_network(vm: ModuleType) -> None:
    probe = Path("/var/tmp") / f"pgvip-ipvs-vm-probe-{uuid.uuid4().hex}"
    # Under the host's /tmp, which the guest covers with its own tmpfs: the runner must keep
    # the command's directory visible (a CI checkout may live there).
    workdir = Path(tempfile.mkdtemp(prefix="pgvip-ipvs-vm-test-", dir="/tmp"))
    script = workdir / "probe.sh"
    script.write_text(
        'echo "cwd: $(pwd)"\n'
        'echo "ifaces: $(ls /sys/class/net | tr "\\n" " ")"\n'
        f'if touch {probe} 2>/dev/null; then echo "root is writable"; fi\n'
        'if touch /tmp/scratch; then echo "tmp is writable"; fi\n'
        'echo "kernel: $(uname -r)"\n'
        "exit 3\n"
    )
    try:
        result = vm.run(["/bin/sh", str(script)], cwd=str(workdir), timeout=60)
        assert not probe.exists(), "the guest wrote to the host's /"
    finally:
        probe.unlink(missing_ok=True)
        shutil.rmtree(workdir)
    TIMINGS.append(f"trivial command: boot {result.boot_s:.1f} s, total {result.total_s:.1f} s")
    assert result.exit_code == 3, result.output
    lines = result.output.splitlines()
    assert f"cwd: {workdir}" in lines, result.output
    assert "ifaces: lo " in lines, result.output  # no NIC: the guest cannot reach any network
    assert "root is writable" not in lines
    assert "tmp is writable" in lines
    assert f"kernel: {result.kernel_version}" in lines
    assert 0 < result.boot_s < result.total_s


def test_hidden_paths_lists_only_dirs_under_tmp_and_run(vm: ModuleType) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="pgvip-ipvs-vm-test-", dir="/tmp"))
    try:
        (workdir / "x.py").write_text("")
        argv = ["/usr/bin/python3", str(workdir / "x.py"), "-v", "/tmp"]
        env = {"PYTHONPATH": f"{workdir}:relative:/opt"}
        assert vm.hidden_paths(argv, "/", env) == [str(workdir)]
        assert vm.hidden_paths(["/bin/true"], "/work", {}) == []
    finally:
        shutil.rmtree(workdir)


def test_a_hung_guest_is_killed_at_the_timeout(vm: ModuleType) -> None:
    started = time.monotonic()
    with pytest.raises(vm.VmError, match=r"did not finish within 8 s .*while the command ran"):
        vm.run(["sleep", "600"], timeout=8)
    elapsed = time.monotonic() - started
    assert elapsed < 8 + 5, f"killing the guest took {elapsed:.1f} s"
