"""What a daemon claims on its host (pgvip.daemon.host_state): a second instance with the same
name, VRID or status port is refused with one line, by check-config too."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest

from pgvip.config import Config, load_config
from pgvip.daemon.host_state import (
    HostStateError,
    check_reload,
    claim_engine,
    claim_instance,
    conflicts,
    others_vips,
    release,
)
from pgvip.naming import StateNames


def config(tmp_path: Path, name: str, **sections: str) -> Config:
    body = {
        "instance": f'name = "{name}"',
        "patroni": 'url = "http://127.0.0.1:8008"',
        "vrrp": f'interface = "{sections.pop("interface", "lo")}"',
        "rw": f'vip = "{sections.pop("rw_vip", "10.20.30.50/24")}"\n'
        f"vrid = {sections.pop('rw_vrid', '50')}",
        "status": f"port = {sections.pop('port', '1')}",
    }
    path = tmp_path / f"{name}-{secrets.token_hex(2)}.toml"
    path.write_text("".join(f"[{k}]\n{v}\n" for k, v in body.items()))
    return load_config(path, {}, {})


def unique() -> str:
    return f"t{secrets.token_hex(4)}"


def test_a_second_daemon_of_one_instance_is_refused() -> None:
    name = unique()
    claim = claim_instance(StateNames(name))
    try:
        with pytest.raises(HostStateError, match=f"named '{name}' is running"):
            claim_instance(StateNames(name))
        claim_instance(StateNames(unique())).release()  # another name is fine
    finally:
        claim.release()
    claim_instance(StateNames(name)).release()


def test_one_vrid_per_interface_and_family(tmp_path: Path) -> None:
    iface = f"t{secrets.token_hex(3)}"  # claims only: the interface need not exist
    x = config(tmp_path, unique(), interface=iface, rw_vrid="50")
    held = claim_engine(x)
    try:
        same_vrid = config(tmp_path, unique(), interface=iface, rw_vrid="50", rw_vip="10.9.9.9")
        with pytest.raises(HostStateError, match=f"rw.vrid 50 on {iface} is already used"):
            claim_engine(same_vrid)
        same_vip = config(tmp_path, unique(), interface=iface, rw_vrid="60")
        with pytest.raises(HostStateError, match="rw.vip 10.20.30.50"):
            claim_engine(same_vip)
        other_if = config(tmp_path, unique(), interface=f"{iface}b", rw_vrid="50")
        release(claim_engine(other_if))
        fine = config(tmp_path, unique(), interface=iface, rw_vrid="60", rw_vip="10.9.9.9")
        theirs = claim_engine(fine)
        assert others_vips(iface, theirs) == {"10.20.30.50"}
        assert others_vips(iface, held) == {"10.9.9.9"}
        release(theirs)
    finally:
        release(held)
    release(claim_engine(config(tmp_path, unique(), interface=iface, rw_vrid="50")))


def test_check_config_names_a_busy_status_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = config(tmp_path, unique(), port=str(port), interface=f"t{secrets.token_hex(3)}")
        found = conflicts(cfg)
        assert len(found) == 1 and f"status.port {port} is already in use" in found[0]
        # While this instance itself runs, its own port and claims are no conflict.
        claim = claim_instance(StateNames(cfg.instance.name))
        try:
            assert conflicts(cfg) == []
        finally:
            claim.release()


def test_a_reload_onto_another_instances_vrid_is_refused_before_the_engine_stops(
    tmp_path: Path,
) -> None:
    iface = f"t{secrets.token_hex(3)}"
    name = unique()
    running = config(tmp_path, name, interface=iface, rw_vrid="50")
    ours = claim_engine(running)
    theirs = claim_engine(
        config(tmp_path, unique(), interface=iface, rw_vrid="60", rw_vip="10.9.9.9")
    )
    try:
        check_reload(config(tmp_path, name, interface=iface, rw_vrid="50", port="2"), running)
        with pytest.raises(HostStateError, match=f"rw.vrid 60 on {iface}"):
            check_reload(config(tmp_path, name, interface=iface, rw_vrid="60"), running)
        check_reload(config(tmp_path, name, interface=iface, rw_vrid="70"), running)
    finally:
        release(ours + theirs)
