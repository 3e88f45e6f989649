#!/usr/bin/env bash
# A database VM: PostgreSQL 15 managed by Patroni (from the venv), and pgvip, both as
# systemd services, with the configs pgvip.lab.render wrote for this node.
#
#   provision-node.sh NODE        (p1, p2 or p3)
set -euo pipefail

node=${1:?usage: provision-node.sh NODE}
repo=/pgvip
venv=/opt/pgvip/venv
render_dir=/var/lib/pgvip-vagrant/render
patroni_yml=$render_dir/$node/patroni.yml
pgvip_toml=$render_dir/$node/pgvip.toml

for f in "$patroni_yml" "$pgvip_toml"; do
    if [[ ! -f $f ]]; then
        echo "provision: $f is missing: run provision-common.sh first" >&2
        exit 2
    fi
done

export DEBIAN_FRONTEND=noninteractive
apt-get -q install -y --no-install-recommends -o DPkg::Lock::Timeout=120 \
    postgresql-15 postgresql-contrib

# Debian creates and starts a cluster 15/main in the very directory Patroni manages:
# drop it once, and keep the distro's umbrella service from starting anything.
if ! systemctl is-active --quiet patroni && pg_lsclusters -h 2>/dev/null | awk '$1 == "15" && $2 == "main"' | grep -q .; then
    pg_dropcluster --stop 15 main
fi
systemctl disable --now postgresql >/dev/null 2>&1 || true
install -d -o postgres -g postgres -m 700 /var/lib/postgresql/15
install -d -o postgres -g postgres -m 2775 /var/run/postgresql

# Patroni: its config holds passwords, so only postgres reads it.
install -d -m 755 /etc/patroni
install -o postgres -g postgres -m 600 "$patroni_yml" /etc/patroni/patroni.yml
cat > /etc/systemd/system/patroni.service <<UNIT
[Unit]
Description=Patroni for the pgvip Vagrant lab (PostgreSQL 15)
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
User=postgres
Group=postgres
ExecStart=$venv/bin/patroni /etc/patroni/patroni.yml
ExecReload=/bin/kill -HUP \$MAINPID
# Patroni stops PostgreSQL itself; killing the whole cgroup would skip that.
KillMode=process
TimeoutSec=30
Restart=on-failure

[Install]
WantedBy=multi-user.target
UNIT

# pgvip: the shipped unit, with the release step pointed at this VM's VRRP interface.
if ! id pgvip >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin pgvip
fi
iface=$(/usr/bin/python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["vrrp"]["interface"])' "$pgvip_toml")
install -d -m 755 /etc/pgvip
install -o root -g pgvip -m 640 "$pgvip_toml" /etc/pgvip/pgvip.toml
ln -sf "$venv/bin/pgvip" /usr/local/bin/pgvip
# The unit's ExecStopPost reads vrrp.interface ($iface here) from /etc/pgvip/pgvip.toml.
install -m 644 "$repo/deploy/pgvip.service" /etc/systemd/system/pgvip.service
install -m 644 "$repo/deploy/sysctl-pgvip.conf" /etc/sysctl.d/90-pgvip.conf
sysctl -q -p /etc/sysctl.d/90-pgvip.conf

if ! /usr/local/bin/pgvip check-config --config /etc/pgvip/pgvip.toml; then
    echo "provision: pgvip rejects /etc/pgvip/pgvip.toml (see above)" >&2
    exit 2
fi

systemctl daemon-reload
systemctl enable patroni pgvip >/dev/null
systemctl restart patroni
systemctl restart pgvip
echo "provision: $node runs patroni and pgvip on $iface"
