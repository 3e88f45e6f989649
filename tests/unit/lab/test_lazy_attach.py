"""The lab is attached to `pgvip` lazily: the daemon's imports and `pgvip run` load nothing from
pgvip.lab, and `pgvip lab` resolves to the lab's own click group on first use."""

from __future__ import annotations

import subprocess
import sys

import click

from pgvip.cli import main

NO_LAB = "assert not any(m.startswith('pgvip.lab') for m in sys.modules), " + (
    "sorted(m for m in sys.modules if m.startswith('pgvip.lab'))"
)


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_cli_and_daemon_import_nothing_from_the_lab() -> None:
    result = _python(f"import pgvip.cli, pgvip.daemon.service; import sys; {NO_LAB}")
    assert result.returncode == 0, result.stderr


def test_run_and_top_level_help_import_nothing_from_the_lab() -> None:
    code = (
        "import contextlib, sys\n"
        "from pgvip.cli import main\n"
        "for args in (['run', '--help'], ['--help']):\n"
        "    with contextlib.suppress(SystemExit):\n"
        "        main.main(args=args, prog_name='pgvip', standalone_mode=False)\n"
        f"{NO_LAB}\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    # The top-level help still names the lab, from the lazy table.
    assert "lab " in result.stdout and "netns lab" in result.stdout


def test_lab_resolves_to_the_lab_group() -> None:
    from pgvip.lab.cli import lab

    ctx = click.Context(main)
    assert isinstance(main, click.Group)
    assert main.get_command(ctx, "lab") is lab
    assert "lab" in main.list_commands(ctx)
