"""The wheel and sdist as a user gets them: built from this checkout, installed with their
declared dependencies into a fresh venv, `pgvip --version` and `pgvip check-config` on the
shipped example config run from there (issue 15). Needs PyPI or pip's cache for the
dependencies, as scripts/setup.sh does."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from pgvip import __version__

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOY = sorted(p.name for p in (REPO / "deploy").iterdir())


def run(*argv: str | Path, cwd: Path = REPO) -> str:
    # Without PYTHONPATH: a checkout on it (and its pgvip.egg-info) would look installed.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False, env=env)  # fmt: skip
    assert done.returncode == 0, f"{' '.join(map(str, argv))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    builder = tmp_path_factory.mktemp("builder")
    run(sys.executable, "-m", "venv", builder)
    run(builder / "bin/pip", "install", "-q", "build>=1")
    run(builder / "bin/python", "-m", "build", "--outdir", out, REPO)
    return out


def test_the_sdist_carries_license_docs_and_deploy(dist: Path) -> None:
    [sdist] = dist.glob("pgvip-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "CHANGELOG.md", "docs/deployment.md"} <= names
    assert {f"deploy/{f}" for f in DEPLOY} <= names


def test_the_wheel_installs_into_a_fresh_venv_and_runs(dist: Path, tmp_path: Path) -> None:
    [wheel] = dist.glob("pgvip-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith("/LICENSE") for n in names)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin/pip", "install", "-q", wheel, cwd=tmp_path)
    assert __version__ in run(venv / "bin/pgvip", "--version")
    shipped = venv / "share/pgvip/deploy"
    assert sorted(p.name for p in shipped.iterdir()) == DEPLOY
    # From a directory outside the checkout, so nothing of it is on the path.
    out = run(venv / "bin/pgvip", "check-config", "--config", shipped / "pgvip.toml", cwd=tmp_path)
    assert "configuration OK" in out
    imported = run(venv / "bin/python", "-c",
                   "import pgvip, sys; print(pgvip.__file__)", cwd=tmp_path)  # fmt: skip
    assert str(venv) in imported
