"""The Debian package as an operator gets it (issue 15): built from this checkout with
dpkg-buildpackage (scripts/build-deb.sh), checked with lintian, and installed with
`apt install ./pgvip_*.deb` into a clean Debian 12 root (debootstrap --variant=minbase) in a
chroot, where `pgvip --version` and `pgvip check-config` on the packaged example run; then
removed and purged there.

PGVIP_DEB=/path/to/pgvip_….deb uses a package built earlier instead of building one, and the
debootstrapped root is cached under /var/cache/pgvip-test/ (tests/integration/debian_package.py).
Needs Debian's archive (debootstrap and apt in the chroot) and PyPI or pip's cache (the build).
The chroot gets no systemd and no /run of the host, so the maintainer scripts start nothing
and change no sysctl of this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgvip import __version__
from tests.integration.debian_package import base_tarball, built_deb, sh

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CHROOT_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}
# apt inside the chroot: retry a failed download instead of failing the test on one hiccup.
APT = ("-q", "-o", "Acquire::Retries=3")
HOST_SYSCTL = Path("/proc/sys/net/ipv4/ip_nonlocal_bind")


def in_root(root: Path, *argv: str, user: str | None = None, **extra: str) -> str:
    """Run argv inside the chroot with a clean environment."""
    spec = [f"--userspec={user}:{user}"] if user else []
    env = [f"{k}={v}" for k, v in {**CHROOT_ENV, **extra}.items()]
    return sh("chroot", *spec, root, "/usr/bin/env", "-i", *env, *argv)


def mounts_under(root: Path) -> list[str]:
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(root) or p.startswith(f"{root}/")]


@pytest.fixture(scope="module")
def deb() -> Path:
    path = built_deb()
    if "PGVIP_DEB" not in os.environ:
        arch = sh("dpkg", "--print-architecture").strip()
        assert path.name == f"pgvip_{__version__}_{arch}.deb"
    return path


@pytest.fixture(scope="module")
def installed(deb: Path) -> Iterator[Path]:
    """A clean bookworm root with /proc mounted and the package installed by apt."""
    tarball = base_tarball()
    scratch = Path(tempfile.mkdtemp(prefix="pgvip-deb-root."))
    root = scratch / "root"
    root.mkdir()
    proc = root / "proc"
    try:
        sh("tar", "-C", root, "--numeric-owner", "-xf", tarball)
        shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
        # Nothing may start a daemon inside the chroot (invoke-rc.d honours this).
        policy = root / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
        sh("mount", "-t", "proc", "proc", proc)
        shutil.copy(deb, root / "tmp" / deb.name)
        before = HOST_SYSCTL.read_text()
        in_root(root, "apt-get", *APT, "update")
        in_root(root, "sh", "-c", f"cd /tmp && apt install -y {' '.join(APT)} ./{deb.name}")
        assert HOST_SYSCTL.read_text() == before, "the chroot's postinst changed a host sysctl"
        yield root
    finally:
        if mounts_under(root):
            subprocess.run(["umount", proc], check=False, timeout=60)
        left = mounts_under(root)
        # Never rm -rf through a mount point: that would delete the host's files.
        assert left == [], f"still mounted, {scratch} left in place: {left}"
        shutil.rmtree(scratch)


def test_lintian_finds_no_errors(deb: Path) -> None:
    done = subprocess.run(["lintian", "--fail-on", "error", "--info", str(deb)],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    tags = [line for line in done.stdout.splitlines() if line[:2] in ("E:", "W:")]
    print("\n".join(tags) or "lintian: no errors, no warnings")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [t for t in tags if t.startswith("E:")]


def test_pgvip_runs_and_checks_the_packaged_config_in_a_clean_bookworm_root(
    installed: Path,
) -> None:
    root = installed
    assert __version__ in in_root(root, "pgvip", "--version")
    out = in_root(root, "pgvip", "check-config", "--config", "/etc/pgvip/pgvip.toml")
    assert "configuration OK" in out
    # As the daemon's own user: the venv is readable and runnable without root.
    assert __version__ in in_root(root, "/usr/bin/pgvip", "--version", user="pgvip")
    # psycopg (ro.probe_sql) is part of the package and finds Debian's libpq5.
    out = in_root(root, "pgvip", "check-config", "--config", "/etc/pgvip/pgvip.toml",
                  PGVIP_RO_PROBE_SQL="true")  # fmt: skip
    assert "configuration OK" in out
    # postinst compiled the bytecode (the package ships none).
    assert list((root / "usr/lib/pgvip/venv/lib").glob("python3.*/site-packages/pgvip/__pycache__"))


def test_the_package_installs_the_unit_user_config_and_sysctl(installed: Path) -> None:
    root = installed
    unit = (root / "lib/systemd/system/pgvip.service").read_text()
    assert "ExecStart=/usr/bin/pgvip run --config /etc/pgvip/pgvip.toml" in unit
    assert "ExecStopPost=+/usr/bin/pgvip release --config /etc/pgvip/pgvip.toml" in unit
    assert "/usr/local" not in unit and "https://" not in unit
    [docs] = [line.split("=", 1)[1].split() for line in unit.splitlines()
              if line.startswith("Documentation=")]  # fmt: skip
    assert docs == ["man:pgvip(1)", "file:/usr/share/doc/pgvip/README.md"]
    assert (root / "usr/share/man/man1/pgvip.1.gz").is_file()
    assert (root / "usr/share/doc/pgvip/README.md").read_text() == (REPO / "README.md").read_text()
    # Installed, neither enabled nor started: the example config names example VIPs.
    assert not list((root / "etc/systemd/system").glob("*.wants/pgvip.service"))
    passwd = in_root(root, "getent", "passwd", "pgvip").strip().split(":")
    assert int(passwd[2]) < 1000 and passwd[6] in ("/usr/sbin/nologin", "/bin/false"), passwd
    assert in_root(root, "id", "-gn", "pgvip").strip() == "pgvip"
    conffiles = in_root(root, "dpkg-query", "-W", "-f=${Conffiles}", "pgvip")
    assert "/etc/pgvip/pgvip.toml" in conffiles
    shipped = (REPO / "deploy/pgvip.toml").read_text()
    assert (root / "etc/pgvip/pgvip.toml").read_text() == shipped
    sysctl = (root / "usr/lib/sysctl.d/90-pgvip.conf").read_text()
    assert "net.ipv4.ip_nonlocal_bind = 1" in sysctl
    assert (root / "usr/bin/pgvip").resolve() == root / "usr/lib/pgvip/venv/bin/pgvip"
    # debian/copyright names the license of every bundled distribution.
    bundled = (root / "usr/share/doc/pgvip/bundled-python-packages.txt").read_text().split()
    names = {line.split("==")[0].lower().replace("_", "-") for line in bundled}
    assert {"aiohttp", "pyroute2", "structlog", "prometheus-client", "psycopg"} <= names
    # Exactly the locked versions (debian/requirements.lock, installed with --require-hashes);
    # setuptools is locked only to build pgvip and removed from the venv afterwards.
    locked = {
        line.split()[0].lower().replace("_", "-")
        for line in (REPO / "debian/requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert {line.lower().replace("_", "-") for line in bundled} == locked - {
        next(pin for pin in locked if pin.startswith("setuptools=="))
    }
    copyright_text = (root / "usr/share/doc/pgvip/copyright").read_text().lower()
    assert sorted(n for n in names if n not in copyright_text) == []
    # What the unit and the defaults run besides pgvip: ExecReload's kill, reset_stale's nft.
    assert (root / "bin/kill").is_file() and (root / "usr/sbin/nft").is_file()


def test_an_upgrade_keeps_the_edited_config_and_recompiles(installed: Path, deb: Path) -> None:
    """A reinstall runs the upgrade path of the maintainer scripts (prerm upgrade, then
    postinst configure with the old version): the same as an upgrade, without a second build."""
    root = installed
    config = root / "etc/pgvip/pgvip.toml"
    config.write_text((REPO / "deploy/pgvip.toml").read_text() + "# edited by the operator\n")
    in_root(root, "sh", "-c", f"cd /tmp && apt install -y {' '.join(APT)} --reinstall ./{deb.name}")
    assert "edited by the operator" in config.read_text()  # no prompt, no overwrite
    assert not (root / "etc/pgvip/pgvip.toml.dpkg-new").exists()
    site = root / "usr/lib/pgvip/venv/lib"
    assert list(site.glob("python3.*/site-packages/pgvip/__pycache__/*.pyc"))
    assert "configuration OK" in in_root(
        root, "pgvip", "check-config", "--config", "/etc/pgvip/pgvip.toml"
    )


def test_remove_keeps_the_config_and_purge_removes_it(installed: Path) -> None:
    """Last in this module: it uninstalls what the fixture installed."""
    root = installed
    config = root / "etc/pgvip/pgvip.toml"
    config.write_text((REPO / "deploy/pgvip.toml").read_text() + "# edited by the operator\n")
    in_root(root, "apt-get", "remove", "-y", *APT, "pgvip")
    assert not (root / "usr/bin/pgvip").exists()
    # prerm removed the bytecode postinst made, so nothing of the venv stays behind.
    assert not (root / "usr/lib/pgvip").exists()
    assert "edited by the operator" in config.read_text()
    status = in_root(root, "dpkg-query", "-W", "-f=${db:Status-Abbrev}", "pgvip")
    assert status.strip() == "rc"
    in_root(root, "apt-get", "purge", "-y", *APT, "pgvip")
    assert not (root / "etc/pgvip").exists()
    # Debian keeps system users on purge (files elsewhere may carry the uid).
    assert in_root(root, "getent", "passwd", "pgvip").startswith("pgvip:")
