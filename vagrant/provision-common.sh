#!/usr/bin/env bash
# Every VM: base packages, pgvip from its Debian package (the .deb in the synced repository's
# dist/, as scripts/build-deb.sh leaves it; built here if there is none), and all configs
# rendered by pgvip.lab.render, the generator the netns lab uses.
#
#   provision-common.sh OWN_IP [--ro]
#
# PGVIP_DEB=/path/to/pgvip_….deb picks a package instead of the newest one in /pgvip/dist.
set -euo pipefail

own_ip=${1:?usage: provision-common.sh OWN_IP [--ro]}
shift
render_args=("$@")

repo=/pgvip
render_dir=/var/lib/pgvip-vagrant/render

if [[ ! -f $repo/pgvip/lab/render.py ]]; then
    echo "provision: $repo does not hold the pgvip repository (is the rsync synced folder up?)" >&2
    exit 2
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() {
    apt-get -q install -y --no-install-recommends -o DPkg::Lock::Timeout=120 "$@"
}
apt-get -q update -o DPkg::Lock::Timeout=120
apt_install ca-certificates curl jq iproute2 nftables postgresql-client \
    python3 python3-venv python3-yaml

# The private network's interface name depends on the box and the provider (eth1 in the
# seed's VMs); VRRP and the VIPs go on whichever interface holds this VM's lab address.
iface=$(ip -o -4 addr show | awk -v ip="$own_ip" '{ split($4, a, "/"); if (a[1] == ip) { print $2; exit } }')
if [[ -z $iface ]]; then
    echo "provision: no interface has $own_ip; check the private_network in the Vagrantfile" >&2
    ip -br -4 addr show >&2
    exit 2
fi

# pgvip as an operator installs it: the Debian package (unit, user, sysctl snippet, /usr/bin).
# The etcd VM gets it too: it is the client, and the package's venv runs pgvip.lab.probe.
deb=${PGVIP_DEB:-}
if [[ -z $deb && -d $repo/dist ]]; then
    deb=$(find "$repo/dist" -maxdepth 1 -name 'pgvip_*.deb' | sort -V | tail -n 1)
fi
if [[ -z $deb ]]; then
    # No package on the host: build one here from a copy of the repository (needs PyPI).
    echo "provision: no $repo/dist/pgvip_*.deb: building one (scripts/build-deb.sh does this on the host)"
    apt_install build-essential debhelper help2man dpkg-dev
    build=/var/tmp/pgvip-deb-build
    rm -rf "$build"
    mkdir -p "$build"
    cp -a "$repo" "$build/src"
    (cd "$build/src" && dpkg-buildpackage -us -uc -b >"$build/build.log" 2>&1) || {
        tail -n 40 "$build/build.log" >&2
        echo "provision: dpkg-buildpackage failed" >&2
        exit 1
    }
    deb=$(find "$build" -maxdepth 1 -name 'pgvip_*.deb' | sort -V | tail -n 1)
fi
# apt wants a path with a slash to take it as a file; a copy, so the synced folder stays as is.
cp "$deb" /var/tmp/pgvip.deb
apt_install /var/tmp/pgvip.deb
rm -f /var/tmp/pgvip.deb
echo "provision: installed $(/usr/bin/pgvip --version) from $(basename "$deb")"

# Stdlib + python3-yaml only (no venv needed): Debian's python3 with the repository on the path.
rm -rf "$render_dir"
mkdir -p "$render_dir"
PYTHONPATH=$repo /usr/bin/python3 -m pgvip.lab.render \
    --vagrant "$render_dir" --interface "$iface" "${render_args[@]}"
echo "provision: rendered configs for interface $iface in $render_dir"
