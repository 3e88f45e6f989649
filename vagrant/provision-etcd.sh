#!/usr/bin/env bash
# The etcd VM: Debian's etcd (v3 API) with the settings pgvip.lab.render wrote to etcd.env.
set -euo pipefail

render_dir=/var/lib/pgvip-vagrant/render
env_file=$render_dir/etcd.env

export DEBIAN_FRONTEND=noninteractive
apt-get -q install -y --no-install-recommends -o DPkg::Lock::Timeout=120 etcd-server

# Read the data directory and client URL from the rendered file, not from a second copy here.
# shellcheck source=/dev/null
data_dir=$(. "$env_file" && echo "$ETCD_DATA_DIR")
# shellcheck source=/dev/null
client_url=$(. "$env_file" && echo "$ETCD_ADVERTISE_CLIENT_URLS")

install -d -o etcd -g etcd -m 700 "$data_dir"
install -m 644 "$env_file" /etc/default/etcd
systemctl enable etcd >/dev/null
if ! systemctl restart etcd; then
    journalctl -u etcd -n 30 --no-pager >&2 || true
    exit 1
fi

for _ in $(seq 1 30); do
    if curl -fsS "$client_url/health" >/dev/null 2>&1; then
        echo "provision: etcd is healthy at $client_url"
        exit 0
    fi
    sleep 1
done
echo "provision: etcd did not become healthy at $client_url within 30 s" >&2
journalctl -u etcd -n 30 --no-pager >&2 || true
exit 1
