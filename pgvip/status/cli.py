"""The `pgvip status` command: where each VIP is, why, and what happened last, read from the
local daemon's status API (a table for humans, `--json` for scripts).

Exit status: 0 the daemon answered; 3 it is unreachable (as LSB `status` uses 3 for "not
running"); 4 something answered but not usefully (not pgvip, auth, TLS, bad response);
2 usage or configuration error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

__all__ = ["EXIT_FAILED", "EXIT_UNREACHABLE", "status"]

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_FAILED = 4
_DEFAULT_CONFIG = "/etc/pgvip/pgvip.toml"


def _fail(code: int, message: str) -> None:
    click.echo(f"pgvip status: {message}", err=True)
    sys.exit(code)


def _from_config(path: str, explicit: bool) -> tuple[str | None, str | None, str | None]:
    """(url, username, password) from the config's [status], or Nones if it cannot be read."""
    from pgvip.config import ConfigError, load_config, read_password_file

    try:
        config = load_config(path, os.environ, {})
    except (ConfigError, OSError) as exc:
        if explicit:
            _fail(EXIT_USAGE, f"cannot use config {path}:\n{exc}")
        click.echo(f"pgvip status: ignoring {path} ({str(exc).splitlines()[0]})", err=True)
        return None, None, None
    st = config.status
    host = str(st.listen)
    if st.listen.is_unspecified:  # listening everywhere: loopback reaches it
        host = "127.0.0.1" if st.listen.version == 4 else "::1"
    if ":" in host:
        host = f"[{host}]"
    url = f"{'https' if st.cert_file else 'http'}://{host}:{st.port}"
    password = None
    if st.username and st.password_file:
        try:
            password = read_password_file(st.password_file, "status.password_file")
        except ConfigError as exc:
            _fail(EXIT_USAGE, f"{exc} (run as root or the pgvip user, or pass --password-file)")
    return url, st.username, password


@click.command("status")
@click.option(
    "--url",
    metavar="URL",
    default=None,
    help="status API of the daemon (default: from the config's [status], else "
    "http://127.0.0.1:8010)",
)
@click.option("--json", "as_json", is_flag=True, help="print the raw /status JSON for scripts")
@click.option(
    "--config",
    "config_path",
    metavar="FILE",
    default=None,
    help=f"read [status] listen/port/auth/TLS from this config (default {_DEFAULT_CONFIG} "
    "if it exists; env PGVIP_CONFIG)",
)
@click.option("--username", default=None, help="basic-auth user (status.username)")
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="file holding the basic-auth password",
)
@click.option(
    "--cacert", type=click.Path(dir_okay=False), default=None, help="CA bundle for https URLs"
)
@click.option(
    "--timeout", type=click.FloatRange(0.1, 60), default=3.0, show_default=True, help="seconds"
)
@click.option(
    "--transitions",
    type=click.IntRange(0, 1000),
    default=10,
    show_default=True,
    help="recent transitions to show in the table",
)
def status(
    url: str | None,
    as_json: bool,
    config_path: str | None,
    username: str | None,
    password_file: str | None,
    cacert: str | None,
    timeout: float,
    transitions: int,
) -> None:
    """Show where each VIP is, why, and the last transitions.

    Exit status: 0 the daemon answered, 3 it is unreachable, 4 something answered but not
    usefully (not pgvip, authentication, TLS), 2 usage or configuration error.
    """
    from pgvip.status.client import DEFAULT_URL, StatusClientError, fetch_status, render_status

    password: str | None = None
    if url is None:
        path = config_path or os.environ.get("PGVIP_CONFIG") or None
        explicit = path is not None
        if path is None and Path(_DEFAULT_CONFIG).exists():
            path = _DEFAULT_CONFIG
        if path is not None:
            url, cfg_user, cfg_password = _from_config(path, explicit)
            if username is None:
                username, password = cfg_user, cfg_password
    if password_file is not None:
        from pgvip.config import ConfigError, read_password_file

        try:
            password = read_password_file(password_file, "--password-file")
        except ConfigError as exc:
            _fail(EXIT_USAGE, str(exc))
        if username is None:
            _fail(EXIT_USAGE, "--password-file needs --username")
    if username is not None and password is None:
        _fail(EXIT_USAGE, "--username needs --password-file")
    try:
        snap = fetch_status(
            url or DEFAULT_URL,
            timeout=timeout,
            username=username,
            password=password,
            cafile=cacert,
        )
    except StatusClientError as exc:
        _fail(EXIT_UNREACHABLE if exc.kind == "unreachable" else EXIT_FAILED, str(exc))
        return
    if as_json:
        click.echo(json.dumps(snap, indent=2))
    else:
        click.echo(render_status(snap, transitions=transitions), nl=False)


def main(argv: list[str] | None = None) -> Any:
    """Run `status` on its own (python -m pgvip.status.cli)."""
    return status.main(args=argv, prog_name="pgvip status")


if __name__ == "__main__":
    main()
