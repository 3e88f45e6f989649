"""The stale-ARP guard's nft script and its readback (pure); the kernel side is in
tests/integration/daemon/test_handoff_guard.py."""

from __future__ import annotations

import ipaddress

import pytest

from pgvip.dataplane.stale_guard import TABLE, GuardError, guarded_vips, ruleset

V4 = ipaddress.ip_address("192.0.2.50")
V6 = ipaddress.ip_address("2001:db8::50")


def test_one_rule_per_vip_that_only_matches_while_the_vip_is_not_local() -> None:
    script = ruleset([V6, V4, V4])
    rules = [line.strip() for line in script.splitlines() if "reject" in line]
    assert rules == [
        "ip daddr 192.0.2.50 fib daddr type != local meta l4proto tcp reject with tcp reset",
        "ip6 daddr 2001:db8::50 fib daddr type != local meta l4proto tcp reject with tcp reset",
    ]
    # Replaced atomically: created, deleted and re-created in one script.
    assert script.startswith(f"table inet {TABLE}\ndelete table inet {TABLE}\n")
    assert "hook prerouting priority -300; policy accept;" in script


def test_no_vip_is_an_error() -> None:
    with pytest.raises(GuardError, match="at least one VIP"):
        ruleset([])


def test_readback_finds_the_guarded_vips_in_nft_list_output() -> None:
    listing = (
        "table inet pgvip_guard {\n\tchain prerouting {\n"
        "\t\ttype filter hook prerouting priority raw; policy accept;\n"
        "\t\tip daddr 192.0.2.50 fib daddr type != local meta l4proto tcp reject with tcp reset\n"
        "\t\tip6 daddr 2001:db8::50 fib daddr type != local meta l4proto tcp"
        " reject with tcp reset\n"
        "\t}\n}\n"
    )
    assert guarded_vips(listing) == {V4, V6}
    assert guarded_vips("table inet pgvip_guard {\n}\n") == set()
