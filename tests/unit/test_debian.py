"""debian/ agrees with the rest of the repository without building anything: the package's
version is pgvip's, its maintainer scripts lint, and the unit it derives from
deploy/pgvip.service keeps the lines debian/rules rewrites (issue 15). The build itself, lintian
and the install on a clean Debian 12 root are tests/integration/test_debian_package.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from pgvip import __version__

REPO = Path(__file__).resolve().parents[2]
DEBIAN = REPO / "debian"


def test_the_package_version_is_pgvips() -> None:
    first = (DEBIAN / "changelog").read_text().splitlines()[0]
    match = re.fullmatch(r"pgvip \(([^)]+)\) \S+; urgency=\w+", first)
    assert match, first
    assert match.group(1) == __version__, "bump debian/changelog with pgvip/__init__.py"


def test_the_maintainer_scripts_and_the_build_script_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is not installed: run `sudo scripts/setup.sh`"
    scripts = [DEBIAN / "pgvip.postinst", DEBIAN / "pgvip.prerm", REPO / "scripts/build-deb.sh"]
    done = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_debian_rules_derives_from_deploy_has_what_it_rewrites() -> None:
    """debian/rules turns /usr/local/bin/pgvip into /usr/bin/pgvip and drops the pip-only
    comment lines; a unit without them would silently ship unchanged."""
    unit = (REPO / "deploy/pgvip.service").read_text()
    rules = (DEBIAN / "rules").read_text()
    assert "ExecStart=/usr/local/bin/pgvip run " in unit
    assert "ExecStopPost=+/usr/local/bin/pgvip release " in unit
    assert unit.startswith("# /etc/systemd/system/pgvip.service\n")
    assert "s|^# /etc/systemd/system/pgvip.service|" in rules
    assert "Documentation=" not in unit  # the packaged unit adds its own (man page, README)
    assert "https://" not in unit
