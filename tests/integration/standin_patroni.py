"""A Patroni REST stand-in for tests where a real cluster is overkill (VRRP interop,
signals, drift): serves /primary, /replica and /patroni with the status codes a test
writes into a JSON file, and /cluster with the file's "cluster" body (no members if
unset). The real lab covers everything that depends on Patroni itself.

Run: python -m tests.integration.standin_patroni --listen 127.0.0.1:8008 --state FILE
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aiohttp import web


def make_app(state_file: Path) -> web.Application:
    def state() -> dict:
        try:
            return json.loads(state_file.read_text())
        except (OSError, ValueError):
            return {}

    async def primary(_: web.Request) -> web.Response:
        code = int(state().get("primary", 503))
        return web.json_response({"role": "primary" if code == 200 else "replica"}, status=code)

    async def replica(_: web.Request) -> web.Response:
        code = 200 if int(state().get("primary", 503)) != 200 else 503
        return web.json_response({"role": "replica"}, status=code)

    async def patroni(_: web.Request) -> web.Response:
        s = state()
        body = {
            "state": "running",
            "role": "primary" if int(s.get("primary", 503)) == 200 else "replica",
            "timeline": 1,
            "patroni": {"name": s.get("name", "standin"), "version": "4.1.5"},
        }
        if "failsafe" in s:
            body["failsafe_mode_is_active"] = bool(s["failsafe"])
        return web.json_response(body)

    async def cluster(_: web.Request) -> web.Response:
        return web.json_response(state().get("cluster", {"members": []}))

    app = web.Application()
    app.router.add_get("/primary", primary)
    app.router.add_get("/replica", replica)
    app.router.add_get("/patroni", patroni)
    app.router.add_get("/cluster", cluster)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", default="127.0.0.1:8008")
    parser.add_argument("--state", required=True, type=Path)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    web.run_app(make_app(args.state), host=host, port=int(port), print=None)


if __name__ == "__main__":
    main()
