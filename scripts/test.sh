#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite: lint, types, unit,
# integration (network namespaces: needs root), interop.
#   extra args are passed to pytest, e.g. scripts/test.sh -k vrrp
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${PGVIP_VENV:-/opt/pgvip/venv}
cd "$repo"

if [[ $(id -u) -eq 0 ]]; then
    bash scripts/setup.sh
elif [[ ! -x $venv/bin/python ]]; then
    echo "test.sh: run as root once (sudo scripts/test.sh) to set up $venv" >&2
    exit 2
fi

echo "== ruff"
"$venv/bin/ruff" check .
echo "== mypy"
"$venv/bin/mypy" pgvip
echo "== pytest"
"$venv/bin/python" -m pytest "$@"
