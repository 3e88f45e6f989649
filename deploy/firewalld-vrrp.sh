#!/bin/sh
# Allow VRRP with firewalld, as in the seed's keepalived notes.
set -eu
firewall-cmd --permanent --add-rich-rule='rule protocol value="vrrp" accept'
firewall-cmd --reload
