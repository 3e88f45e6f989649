#!/usr/bin/env bash
# Every VM: base packages, the pgvip venv (pgvip + Patroni + psycopg from the synced
# repository), and all configs rendered by pgvip.lab.render, the generator the netns lab uses.
#
#   provision-common.sh OWN_IP [--ro]
set -euo pipefail

own_ip=${1:?usage: provision-common.sh OWN_IP [--ro]}
shift
render_args=("$@")

repo=/pgvip
venv=/opt/pgvip/venv
render_dir=/var/lib/pgvip-vagrant/render

if [[ ! -f $repo/pgvip/lab/render.py ]]; then
    echo "provision: $repo does not hold the pgvip repository (is the rsync synced folder up?)" >&2
    exit 2
fi

export DEBIAN_FRONTEND=noninteractive
apt-get -q update -o DPkg::Lock::Timeout=120
apt-get -q install -y --no-install-recommends -o DPkg::Lock::Timeout=120 \
    ca-certificates curl jq iproute2 nftables postgresql-client \
    python3 python3-venv python3-yaml

# The private network's interface name depends on the box and the provider (eth1 in the
# seed's VMs); VRRP and the VIPs go on whichever interface holds this VM's lab address.
iface=$(ip -o -4 addr show | awk -v ip="$own_ip" '{ split($4, a, "/"); if (a[1] == ip) { print $2; exit } }')
if [[ -z $iface ]]; then
    echo "provision: no interface has $own_ip; check the private_network in the Vagrantfile" >&2
    ip -br -4 addr show >&2
    exit 2
fi

# /usr/bin/python3, so that the postgres and pgvip users can execute the venv's interpreter.
if [[ ! -x $venv/bin/python ]]; then
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "${repo}[lab]"

# Stdlib + python3-yaml only, so it would work even before the venv exists.
rm -rf "$render_dir"
mkdir -p "$render_dir"
PYTHONPATH=$repo /usr/bin/python3 -m pgvip.lab.render \
    --vagrant "$render_dir" --interface "$iface" "${render_args[@]}"
echo "provision: rendered configs for interface $iface in $render_dir"
