#!/usr/bin/env bash
# Set up a fresh Debian 12 machine (Ubuntu 24.04 untested; 22.04 lacks Python 3.11) for pgvip: the apt packages
# the lab and the tests use, a `pgvip` system user, and a Python venv with
# pgvip (editable) plus its lab and test extras. Idempotent; run as root.
#
#   PGVIP_VENV   where the venv goes (default /opt/pgvip/venv)
#   PGVIP_SKIP_APT=1  skip apt (packages already installed)
set -euo pipefail

if [[ $(id -u) -ne 0 ]]; then
    echo "setup.sh: must run as root (it installs packages and creates a user)" >&2
    exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${PGVIP_VENV:-/opt/pgvip/venv}

apt_packages=(
    postgresql postgresql-contrib etcd-server nftables iproute2 tshark tcpdump
    keepalived haproxy arping iputils-ping curl jq util-linux procps
    python3 python3-venv python3-dev python3-yaml shellcheck ruby
    qemu-system-x86 linux-image-amd64 busybox-static ipvsadm
    # the Debian package (scripts/build-deb.sh, debian/control's Build-Depends) and its test
    build-essential debhelper help2man lintian debootstrap
    # the systemd tests (tests/integration/systemd): systemd-nspawn
    systemd-container
    # the L3 (BGP) mode: BIRD 2 is the speaker pgvip runs; FRR is the lab's router
    bird2 frr
)

if [[ ${PGVIP_SKIP_APT:-0} != 1 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; the answer does not matter here.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get -q update -o DPkg::Lock::Timeout=120
    apt-get -q install -y --no-install-recommends -o DPkg::Lock::Timeout=120 "${apt_packages[@]}"
fi

# Debian's postgresql package starts a default cluster on :5432 in the root
# namespace; the lab does not need it, and it must not answer for a lab node.
if command -v pg_lsclusters >/dev/null; then
    pg_lsclusters -h 2>/dev/null | while read -r ver name _; do
        pg_ctlcluster "$ver" "$name" stop 2>/dev/null || true
    done
fi
# systemd is not always PID 1 (containers, CI): stop the distro daemons by
# their init scripts too, so they do not hold ports or VRRP in the root namespace.
for svc in etcd keepalived haproxy frr bird; do
    if command -v systemctl >/dev/null && systemctl is-system-running >/dev/null 2>&1; then
        systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done

# The daemon runs as an unprivileged user with CAP_NET_ADMIN + CAP_NET_RAW.
if ! id pgvip >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin pgvip
fi

# /usr/bin/python3, not a per-user pyenv: the lab runs Patroni as `postgres`
# and pgvip as `pgvip`, and both must be able to execute the interpreter.
if [[ ! -x $venv/bin/python ]]; then
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
# Editable when the unprivileged users can read this checkout (a developer's tree);
# otherwise (a checkout under a 0700 directory, as some CI runners make) a regular
# install, so that `pgvip` run as the `pgvip` user can import its own code.
if setpriv --reuid=nobody --regid=nogroup --clear-groups -- test -r "$repo/pgvip/__init__.py"; then
    "$venv/bin/pip" install -q -e "$repo[lab,test,bench]"
else
    echo "setup.sh: $repo is not readable by unprivileged users; installing a copy"
    "$venv/bin/pip" install -q --force-reinstall --no-deps "$repo"
    "$venv/bin/pip" install -q "$repo[lab,test,bench]"
fi
ln -sf "$venv/bin/pgvip" /usr/local/bin/pgvip
echo "setup.sh: ready: $("$venv/bin/pgvip" --version) in $venv"
