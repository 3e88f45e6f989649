"""One Debian 12 container with systemd as PID 1 per test module (machine.py), pgvip
installed in it as a package would install it, a stand-in Patroni as `patroni.service`, and
`eth0` (one end of a veth pair inside the container) carrying 192.0.2.51/24.

Each test starts from a stopped pgvip.service with no drop-ins and the default test config;
`Pgvip` wraps what the tests do to the unit.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.integration.systemd import machine as m

VIP = "192.0.2.50"
SOURCE = "192.0.2.51"
UNIT = "pgvip.service"
DROPIN_DIR = "/etc/systemd/system/pgvip.service.d"
CONFIG = "/etc/pgvip/pgvip.toml"
STATE = "/etc/pgvip-test/patroni-state.json"  # what the stand-in Patroni answers
# Lines for the end-of-run summary (boot time, security scores), filled by the fixtures/tests.
SUMMARY: list[str] = []


def render_config(poll_interval: float = 0.1, ro: bool = False) -> str:
    text = f"""\
[patroni]
url = "http://127.0.0.1:8008"
poll_interval = {poll_interval}
timeout = 0.5

[vrrp]
interface = "eth0"
advert_int = 20

[rw]
vip = "{VIP}/24"
vrid = 50
priority = 200

[announce]
garp_count = 1

[log]
level = "info"
"""
    if ro:
        text += '\n[ro]\nvip = "192.0.2.49/24"\nvrid = 51\ndataplane = "nftables"\n'
    return text


def wait_for(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


class Pgvip:
    """pgvip.service in the container, seen through systemctl, journalctl and ip."""

    def __init__(self, machine: m.Machine) -> None:
        self.m = machine
        self.cursor = ""

    def reset(self) -> None:
        self.m.sh(f"systemctl stop {UNIT} fake-postgres; systemctl reset-failed {UNIT}"
                  f"; rm -rf {DROPIN_DIR}"
                  "; systemctl daemon-reload", check=False)  # fmt: skip
        self.m.write(CONFIG, render_config())
        self.m.write(STATE, json.dumps({"primary": 200}))
        self.cursor = self.m.cursor()  # journal entries of this test only

    def dropin(self, name: str, text: str) -> None:
        self.m.write(f"{DROPIN_DIR}/{name}.conf", text)
        self.m.sh("systemctl daemon-reload")

    def start(self) -> None:
        self.m.sh(f"systemctl start {UNIT}", timeout=60)

    def prop(self, name: str) -> str:
        return self.m.show(UNIT, name)[name]

    def main_pid(self) -> int:
        return int(self.prop("MainPID"))

    def state(self) -> tuple[str, str]:
        props = self.m.show(UNIT, "ActiveState", "SubState")
        return props["ActiveState"], props["SubState"]

    def has_vip(self) -> bool:
        return f" {VIP}/24 " in self.m.host_net("ip", "-4", "-o", "addr", "show", "dev", "eth0")

    def wait_vip(self, present: bool = True, timeout: float = 10) -> None:
        wait_for(lambda: self.has_vip() == present, timeout,
                 f"VIP {'on' if present else 'off'} eth0")  # fmt: skip

    def journal(self) -> list[dict[str, Any]]:
        return self.m.journal(UNIT, self.cursor)

    def messages(self) -> list[str]:
        return [str(e.get("MESSAGE", "")) for e in self.journal()]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.journal() if e.get("PGVIP_EVENT") == event]

    def status(self) -> dict[str, Any]:
        out = self.m.host_net("curl", "-sf", "-m", "2", "http://127.0.0.1:8010/status")
        return dict(json.loads(out))

    def polls(self) -> int:
        inst = self.status()["instances"]
        rw = inst["rw"] if isinstance(inst, dict) else next(i for i in inst if i["name"] == "rw")
        return int(rw["poll"]["polls"])


def _prepare(root: Any) -> None:
    (root / "etc/pgvip-test/patroni-state.json").write_text(json.dumps({"primary": 200}))
    (root / "etc/pgvip").mkdir(parents=True, exist_ok=True)
    (root / CONFIG.lstrip("/")).write_text(render_config())


@pytest.fixture(scope="module")
def machine(request: pytest.FixtureRequest) -> Iterator[m.Machine]:
    if os.geteuid() != 0:
        pytest.skip("systemd-nspawn needs root")
    missing = m.missing_tools()
    if missing:
        pytest.fail(
            f"missing {missing}: scripts/setup.sh installs systemd-container and debootstrap"
        )
    name = f"pgvip-sd-{os.getpid()}-{request.module.__name__.rsplit('_', 1)[-1]}"[:60]
    started = time.monotonic()
    with m.booted(name, _prepare) as machine:
        ready = time.monotonic() - started
        how = "wheel" if os.environ.get("PGVIP_SYSTEMD_INSTALL") == "wheel" else "Debian package"
        SUMMARY.append(f"{request.module.__name__}: pgvip from the {how}, container ready "
                       f"in {ready:.1f} s (systemd boot {machine.boot_seconds:.2f} s)")  # fmt: skip
        machine.host_net("ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p")
        machine.host_net("ip", "addr", "add", f"{SOURCE}/24", "dev", "eth0")
        machine.host_net("ip", "link", "set", "eth0p", "up")
        machine.host_net("ip", "link", "set", "eth0", "up")
        machine.host_net("ip", "link", "set", "lo", "up")
        machine.sh("systemctl start patroni.service")
        wait_for(lambda: _patroni_up(machine), 30, "the stand-in Patroni in the container")
        yield machine


def _patroni_up(machine: m.Machine) -> bool:
    try:
        machine.host_net("curl", "-sf", "-m", "1", "http://127.0.0.1:8008/patroni")
    except m.MachineError:
        return False
    return True


@pytest.fixture
def pgvip(machine: m.Machine) -> Iterator[Pgvip]:
    unit = Pgvip(machine)
    unit.reset()
    try:
        yield unit
    finally:
        print("--- journalctl -u pgvip (this test)")
        print(machine.sh(f"journalctl -q -u {UNIT} --no-pager --after-cursor='{unit.cursor}'"
                         " | tail -40", check=False))  # fmt: skip
        unit.reset()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SUMMARY:
        terminalreporter.write_sep("-", "pgvip.service under systemd (nspawn)")
        for line in SUMMARY:
            terminalreporter.write_line(line)
