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


def _lock() -> dict[str, tuple[str, list[str]]]:
    """debian/requirements.lock as {normalised name: (version, [sha256, ...])}."""
    text = (DEBIAN / "requirements.lock").read_text().replace("\\\n", " ")
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        spec, *opts = line.split()
        name, sep, version = spec.partition("==")
        assert sep, f"not pinned with ==: {spec}"
        digests = [o.removeprefix("--hash=sha256:") for o in opts]
        assert digests and all(re.fullmatch(r"[0-9a-f]{64}", d) for d in digests), line
        pins[re.sub(r"[-_.]+", "-", name).lower()] = (version, digests)
    return pins


def test_the_lock_pins_every_bundled_dependency_with_hashes_and_rules_requires_them() -> None:
    """Each requirement of pgvip[sql] (and setuptools, the build backend) is in the lock at a
    version its specifier allows, so the --require-hashes install cannot fall back to PyPI's
    newest release; debian/rules installs only from the lock."""
    import tomllib

    from packaging.requirements import Requirement

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = [
        *project["project"]["dependencies"],
        *project["project"]["optional-dependencies"]["sql"],
        *project["build-system"]["requires"],
    ]
    pins = _lock()
    for text in wanted:
        req = Requirement(text)
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in pins, f"{req.name} is not in debian/requirements.lock"
        assert req.specifier.contains(pins[name][0]), f"{text}: locked {pins[name][0]}"
    rules = (DEBIAN / "rules").read_text()
    assert "--require-hashes --only-binary=:all: -r debian/requirements.lock" in rules
    installs = [line for line in rules.splitlines() if "$(PIP) install" in line]
    assert all("requirements.lock" in line or "--no-index" in line for line in installs), installs
