#!/usr/bin/env bash
# Build the Debian package (debian/) from this checkout: copies the tracked (and untracked,
# not ignored) files into a scratch directory, runs dpkg-buildpackage there, and leaves
# pgvip_<version>_<arch>.deb (plus .buildinfo/.changes) in OUTDIR. Prints the .deb's path.
# Needs the Build-Depends of debian/control (scripts/setup.sh installs them) and PyPI or
# pip's cache for the bundled Python libraries (debian/README.Debian).
#
#   scripts/build-deb.sh [OUTDIR]     (default: dist/ in this checkout)
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)
scratch=$(mktemp -d /tmp/pgvip-deb.XXXXXX)
trap 'rm -rf "$scratch"' EXIT

mkdir "$scratch/src"
git -C "$repo" ls-files -z --cached --others --exclude-standard \
    | (cd "$repo" && xargs -0 cp --parents -t "$scratch/src")
# A clean environment: not the developer's venv or PYTHONPATH, whose pgvip would be picked up.
(cd "$scratch/src" && env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="${HOME:-/root}" \
    LANG=C.UTF-8 ${PIP_CACHE_DIR:+PIP_CACHE_DIR=$PIP_CACHE_DIR} \
    dpkg-buildpackage -us -uc -b) > "$scratch/build.log" 2>&1 || {
    tail -n 40 "$scratch/build.log" >&2
    echo "build-deb.sh: dpkg-buildpackage failed (log above)" >&2
    exit 1
}
shopt -s nullglob
built=("$scratch"/pgvip_*.deb)
[[ ${#built[@]} -eq 1 ]] || { echo "build-deb.sh: expected one .deb, got ${built[*]-none}" >&2; exit 1; }
cp "$scratch"/pgvip_*.deb "$scratch"/pgvip_*.buildinfo "$scratch"/pgvip_*.changes "$out/"
echo "$out/$(basename "${built[0]}")"
