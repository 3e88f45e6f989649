"""The `pgvip` command line: run, check-config, release, and the lab."""

from __future__ import annotations

import click

from pgvip import __version__


@click.group()
@click.version_option(__version__, prog_name="pgvip")
def main() -> None:
    """pgvip: an RW VIP on the Patroni leader and an RO VIP over the replicas."""
