#!/usr/bin/env bash
# A database VM: PostgreSQL 15 managed by Patroni (from a venv: Debian 12 ships Patroni 3.0),
# and pgvip from its Debian package (provision-common.sh installed it), both as systemd
# services, with the configs pgvip.lab.render wrote for this node.
#
#   provision-node.sh NODE        (p1, p2 or p3)
set -euo pipefail

node=${1:?usage: provision-node.sh NODE}
venv=/opt/patroni/venv
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

# Patroni (with its etcd v3 client) and psycopg, from PyPI, in a venv of /usr/bin/python3 so
# that the postgres user can run it. The version range is pyproject.toml's `lab` extra.
if [[ ! -x $venv/bin/python ]]; then
    mkdir -p "$(dirname "$venv")"
    /usr/bin/python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q "patroni[etcd3]>=4.1,<4.2" "psycopg[binary]>=3.1"

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

# pgvip: the package's unit (/lib/systemd/system/pgvip.service, user pgvip, only CAP_NET_ADMIN
# + CAP_NET_RAW) and sysctl snippet, with this node's config. The unit's ExecStopPost reads
# vrrp.interface from /etc/pgvip/pgvip.toml.
install -o root -g pgvip -m 640 "$pgvip_toml" /etc/pgvip/pgvip.toml
sysctl -q -p /usr/lib/sysctl.d/90-pgvip.conf

if ! /usr/bin/pgvip check-config --config /etc/pgvip/pgvip.toml; then
    echo "provision: pgvip rejects /etc/pgvip/pgvip.toml (see above)" >&2
    exit 2
fi
iface=$(/usr/bin/python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["vrrp"]["interface"])' "$pgvip_toml")

systemctl daemon-reload
systemctl enable patroni pgvip >/dev/null
systemctl restart patroni
systemctl restart pgvip
echo "provision: $node runs patroni and pgvip on $iface"
