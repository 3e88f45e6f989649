"""Shared by the tests that need the Debian package or a clean Debian root (issue 15): the
.deb built once per test session, and a debootstrapped root cached as a tarball.

- `built_deb()`: $PGVIP_DEB if set (a package built earlier in the same CI run), else
  scripts/build-deb.sh into a temporary directory removed when the session ends; built at
  most once per session, whichever test asks first.
- `base_tarball(include=...)`: `debootstrap --variant=minbase bookworm` (plus `--include`
  packages) as a tarball under /var/cache/pgvip-test/, one per ISO week and package list, so
  a second run skips debootstrap (~30 s here) and a fresh machine still makes one.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path("/var/cache/pgvip-test")
SUITE = "bookworm"


def sh(*argv: str | Path, timeout: float = 600, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, check=False, env=env)  # fmt: skip
    assert done.returncode == 0, f"{' '.join(map(str, argv))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@functools.cache
def built_deb() -> Path:
    given = os.environ.get("PGVIP_DEB")
    if given:
        path = Path(given).resolve()
        assert path.is_file(), f"PGVIP_DEB={given}: no such file"
        return path
    out = Path(tempfile.mkdtemp(prefix="pgvip-deb-build."))
    atexit.register(shutil.rmtree, out, True)
    # Without PYTHONPATH: the build must not see a checkout's pgvip in place of its own.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    path = Path(sh("bash", REPO / "scripts/build-deb.sh", out, env=env).strip().splitlines()[-1])
    assert path.is_file(), path
    return path


def base_tarball(include: tuple[str, ...] = ()) -> Path:
    """A debootstrapped root (minbase, plus `include`) as a tarball, made once per ISO week;
    older tarballs of the same package list are deleted."""
    year, week, _ = datetime.date.today().isocalendar()
    flavour = "minbase"
    if include:
        flavour += "-" + hashlib.sha256(",".join(sorted(include)).encode()).hexdigest()[:8]
    tarball = CACHE / f"{SUITE}-{flavour}-{year}-W{week:02d}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as scratch:
        root = Path(scratch) / "root"
        extra = [f"--include={','.join(sorted(include))}"] if include else []
        # No mirror argument: debootstrap's default, Debian's own archive.
        sh("debootstrap", "--variant=minbase", *extra, SUITE, root, timeout=900)
        partial = Path(scratch) / "root.tar"
        sh("tar", "-C", root, "--numeric-owner", "-cf", partial, ".")
        partial.rename(tarball)  # atomic: a killed run leaves no half tarball under the name
    for old in CACHE.glob(f"{SUITE}-{flavour}-*-W*.tar"):
        if old != tarball:
            old.unlink()
    return tarball
