"""Tests for pgvip.lab.cli's refusals that happen before anything touches the system."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from pgvip.cli import main
from pgvip.lab.cli import lab


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 0)


@pytest.mark.parametrize(
    "args",
    [
        ["up"],
        ["down"],
        ["status"],
        ["demo"],
        ["kill", "p1", "patroni"],
        ["partition", "p1"],
        ["heal", "p1"],
        ["exec", "p1", "--", "true"],
        ["reset"],
    ],
)
def test_every_command_needs_root(as_user: None, args: list[str]) -> None:
    result = CliRunner().invoke(lab, args)
    assert result.exit_code == 2
    assert "needs root" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["up", "--nodes", "1"], "--nodes must be 2 to 5, got 1"),
        (["up", "--nodes", "6"], "--nodes must be 2 to 5, got 6"),
        (["up", "--subnet", "10.0.0.0/16"], "--subnet must be a /24"),
        (["up", "--subnet", "banana"], "--subnet must be an IPv4"),
        (["up", "--prefix", "much-too-long"], "--prefix must be 1-8 characters"),
        (["down", "--prefix", "a b"], "--prefix must be 1-8 characters"),
    ],
)
def test_bad_arguments_exit_2(as_root: None, args: list[str], message: str) -> None:
    result = CliRunner().invoke(lab, args)
    assert result.exit_code == 2
    assert message in result.output


def test_status_of_an_unknown_lab(as_root: None) -> None:
    result = CliRunner().invoke(lab, ["status", "--prefix", "zq9"])
    assert result.exit_code == 2
    assert "no lab with prefix 'zq9'" in result.output


def test_lab_is_a_subcommand_of_pgvip() -> None:
    result = CliRunner().invoke(main, ["lab", "--help"])
    assert result.exit_code == 0
    for command in ("up", "down", "status", "demo", "exec", "kill", "partition", "heal"):
        assert f"  {command} " in result.output
