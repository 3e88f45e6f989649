"""Loading: merge file, env and flags over the defaults, check each value and the
combinations, and build a Config or raise ConfigError with every problem."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pgvip.config.model import SECTION_TYPES, Config
from pgvip.config.problems import ConfigError, ConfigProblem, Invalid, Severity
from pgvip.config.schema import DEFAULT_CONFIG_PATH, ENV_CONFIG, SCHEMA, SETTINGS
from pgvip.config.values import (
    Given,
    convert,
    env_values,
    file_values,
    flag_values,
    parse_typed,
    show,
)
from pgvip.dataplane.balancer.nft_ruleset import NFT_SCHEDULERS

# -- cross-key checks --------------------------------------------------------------


class _Checker:
    def __init__(self, values: dict[str, Any], effective: dict[str, Given]) -> None:
        self.v = values
        self.effective = effective
        self.problems: list[ConfigProblem] = []

    def add(self, key: str, message: str, severity: Severity = "error") -> None:
        given = self.effective.get(key)
        if given is None:
            shown = show(SETTINGS[key].default)
            self.problems.append(ConfigProblem(key, "default", shown, message, severity=severity))
        else:
            self.problems.append(
                ConfigProblem(key, given.source, given.show(), message, severity=severity)
            )

    def run(self) -> list[ConfigProblem]:
        self._vips()
        self._unicast()
        self._auth_and_tls()
        self._ro()
        self._bgp()
        interval = self.v.get("announce.garp_interval")
        if interval is not None and interval < 1.0:
            self.add(
                "announce.garp_interval",
                "below 1.0 s: neighbours ignore a GARP within locktime (1 s) of the last one",
                "warning",
            )
        return self.problems

    def _vips(self) -> None:
        rw, ro = self.v.get("rw.vip"), self.v.get("ro.vip")
        if rw is not None and ro is not None and rw.ip == ro.ip:
            self.add("ro.vip", "same address as rw.vip: the RO VIP needs an address of its own")
        if rw is not None and ro is not None and rw.version != ro.version:
            self.add(
                "ro.vip",
                f"is IPv{ro.version} but rw.vip is IPv{rw.version}: one pgvip process speaks "
                "VRRP in one address family, so both VIPs must be of it",
            )
        rw_vrid, ro_vrid = self.v.get("rw.vrid"), self.v.get("ro.vrid")
        if ro is not None and rw_vrid is not None and rw_vrid == ro_vrid:
            self.add("ro.vrid", "same as rw.vrid: each VIP needs its own VRRP router id")

    def _unicast(self) -> None:
        src = self.v.get("vrrp.unicast_src")
        peers = self.v.get("vrrp.unicast_peers") or ()
        if "vrrp.unicast_peers" not in self.v:
            return  # invalid, already reported
        if peers and "vrrp.unicast_src" in self.v and src is None:
            source = self.effective["vrrp.unicast_peers"].source
            msg = "vrrp.unicast_src is required when vrrp.unicast_peers is set"
            self.problems.append(ConfigProblem("vrrp.unicast_src", source, None, msg))
        if src is not None and src in peers:
            self.add("vrrp.unicast_peers", f"contains vrrp.unicast_src {src} (ourselves)")
        dupes = sorted({str(p) for p in peers if peers.count(p) > 1})
        if dupes:
            self.add("vrrp.unicast_peers", f"lists {', '.join(dupes)} more than once")
        for vip_key in ("rw.vip", "ro.vip"):
            vip = self.v.get(vip_key)
            if vip is None:
                continue
            # unicast_src alone (no peers) is still the adverts' source: the VIPs' family too.
            for key, addrs in (("vrrp.unicast_src", (src,)), ("vrrp.unicast_peers", peers)):
                wrong = [a for a in addrs if a is not None and a.version != vip.version]
                if wrong:
                    self.add(
                        key,
                        f"{wrong[0]} is IPv{wrong[0].version} but {vip_key} is "
                        f"IPv{vip.version}: unicast VRRP peers must be the VIP's family",
                    )

    def _auth_and_tls(self) -> None:
        v = self.v
        if v.get("patroni.key_file") and not v.get("patroni.cert_file"):
            self.add("patroni.key_file", "needs patroni.cert_file (the client certificate)")
        if v.get("patroni.password") is not None and v.get("patroni.password_file"):
            self.add("patroni.password", "set patroni.password or patroni.password_file, not both")
        for key in ("patroni.password", "patroni.password_file"):
            if v.get(key) is not None and not v.get("patroni.username"):
                self.add(key, "needs patroni.username (basic auth sends a user and a password)")
        url = v.get("patroni.url")
        if url is not None and url.lower().startswith("http://"):
            for key in ("patroni.ca_file", "patroni.cert_file"):
                if v.get(key):
                    self.add(key, "ignored: patroni.url is http://, not https://", "warning")
        if bool(v.get("status.cert_file")) != bool(v.get("status.key_file")):
            missing = "status.key_file" if v.get("status.cert_file") else "status.cert_file"
            present = "status.cert_file" if missing == "status.key_file" else "status.key_file"
            self.add(present, f"needs {missing} as well (TLS needs both)")
        if bool(v.get("status.username")) != bool(v.get("status.password_file")):
            present = "status.username" if v.get("status.username") else "status.password_file"
            other = "status.password_file" if present == "status.username" else "status.username"
            self.add(present, f"needs {other} as well (basic auth needs both)")

    def _bgp(self) -> None:
        """bgp mode: both VIPs announced the same way, and a speaker that can peer."""
        rw_mode, ro_mode = self.v.get("rw.announce"), self.v.get("ro.announce")
        both = self.v.get("ro.vip") is not None and None not in (rw_mode, ro_mode)
        if both and rw_mode != ro_mode:
            self.add(
                "ro.announce",
                f"is {ro_mode!r} but rw.announce is {rw_mode!r}: one pgvip process "
                "announces both VIPs the same way (mixing VRRP and BGP is not supported)",
            )
        if rw_mode != "bgp":
            return
        for key in ("bgp.local_as", "bgp.peer_as"):
            if key in self.v and self.v[key] is None:
                self.add(key, 'is required with rw.announce = "bgp"')
        if "bgp.peers" in self.v and not self.v["bgp.peers"]:
            self.add("bgp.peers", 'is required with rw.announce = "bgp": list the routers')
        src = self.v.get("bgp.source")
        backstop = self.v.get("bgp.backstop")
        if backstop is not None and backstop.prefixlen < (16 if backstop.version == 4 else 48):
            self.add(
                "bgp.backstop",
                f"{backstop} is too wide to announce from every node: reserve a small "
                "prefix for the VIPs (/16 or longer, /48 for IPv6)",
            )
        for vip_key in ("rw.vip", "ro.vip"):
            vip = self.v.get(vip_key)
            if vip is None:
                continue
            if backstop is not None and (vip.version != backstop.version or vip.ip not in backstop):
                self.add("bgp.backstop", f"{backstop} does not cover {vip_key} {vip.ip}")
            if vip.network.prefixlen != vip.max_prefixlen:
                self.add(
                    vip_key,
                    f"is {vip}: in bgp mode a VIP is a host route, so give it no prefix "
                    f"(or /{vip.max_prefixlen})",
                )
            peers = self.v.get("bgp.peers") or ()
            for key, addrs in (("bgp.source", (src,)), ("bgp.peers", peers)):
                wrong = [a for a in addrs if a is not None and a.version != vip.version]
                if wrong:
                    self.add(
                        key,
                        f"{wrong[0]} is IPv{wrong[0].version} but {vip_key} is "
                        f"IPv{vip.version}: pgvip announces a VIP over sessions of its family",
                    )
        if self.v.get("rw.vip") is not None and self.v["rw.vip"].version == 6 and not src:
            self.add("bgp.source", "is required for IPv6 in bgp mode: a global address of the "
                     "uplink (the primary address pgvip would pick is link-local)")  # fmt: skip
        if self.v.get("bgp.bfd") and self.v.get("bgp.bfd_interval", 0) * 3 >= self.v.get(
            "bgp.hold_time", 3
        ):
            self.add("bgp.bfd_interval", "x 3 is not below bgp.hold_time: BFD would gain nothing")

    def _ro(self) -> None:
        if self.v.get("ro.dataplane") != "nftables":
            return  # "auto" may yet pick IPVS: the engine says so when it cannot
        forwarding = self.v.get("ro.forwarding")
        if forwarding not in (None, "nat"):
            self.add("ro.forwarding", 'nftables supports only "nat" (dr and tun need IPVS)')
        if self.v.get("ro.scheduler") not in (None, *sorted(NFT_SCHEDULERS)):
            self.add("ro.scheduler", "nftables supports only rr and wrr (the others need IPVS)")
        if self.v.get("ro.persistence_timeout"):
            self.add("ro.persistence_timeout", "nftables has no persistence (it needs IPVS): use 0")


# -- loading -----------------------------------------------------------------------


def _build(
    layers: list[dict[str, Given]],
    problems: list[ConfigProblem],
    path: Path | None,
    *,
    file_failed: bool = False,
) -> Config:
    values: dict[str, Any] = {}
    effective: dict[str, Given] = {}
    for setting in SCHEMA:
        # Every layer's value is checked, so a bad file value is reported even when a flag
        # overrides it today: it would bite as soon as the flag goes away.
        for layer in layers:
            given = layer.get(setting.name)
            if given is None:
                continue
            try:
                value = convert(setting, given)
            except Invalid as exc:
                shown = given.show()
                problems.append(
                    ConfigProblem(setting.name, given.source, shown, exc.message, exc.suggestion)
                )
                values.pop(setting.name, None)
                effective[setting.name] = given
                continue
            values[setting.name] = value
            effective[setting.name] = given
        if setting.name in effective:
            continue
        if setting.required:
            if file_failed:
                continue  # "required" would only repeat that the file is unusable
            how = f"[{setting.section}] {setting.key} = ... in the config file, {setting.env}"
            how += f" or {setting.option}" if setting.option else ""
            msg = f"{setting.name} is required: set {how}"
            problems.append(ConfigProblem(setting.name, "", None, msg))
            continue
        if setting.default is None:
            values[setting.name] = None
        else:
            default = parse_typed(setting.kind, setting.default)
            values[setting.name] = setting.check(default) if setting.check else default

    problems.extend(_Checker(values, effective).run())
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise ConfigError(problems)

    sections = {}
    for section, cls in SECTION_TYPES.items():
        kwargs = {s.key: values[s.name] for s in SCHEMA if s.section == section}
        sections[section] = cls(**kwargs)
    return Config(**sections, path=path, warnings=tuple(problems))


def _read_toml(path: Path, problems: list[ConfigProblem]) -> dict[str, Any]:
    source = str(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(ConfigProblem("", source, None, f"not UTF-8 text ({exc.reason})"))
        return {}
    except OSError as exc:
        problems.append(
            ConfigProblem("", source, None, f"cannot read config file: {exc.strerror or exc}")
        )
        return {}
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        if m:
            source = f"{source}:{m.group(1)}:{m.group(2)}"
            msg = msg[: m.start()]
        elif msg.endswith("(at end of document)"):
            msg = msg[: -len("(at end of document)")].rstrip()
            source = f"{source}: at end of document"
        problems.append(ConfigProblem("", source, None, f"TOML syntax error: {msg}"))
        return {}


def load_config(
    path: str | Path | None,
    env: Mapping[str, str],
    flags: Mapping[str, object],
    *,
    default_path: Path = DEFAULT_CONFIG_PATH,
) -> Config:
    """Read the file (path, else $PGVIP_CONFIG, else default_path), env and flags; validate.

    A missing default file is fine; a missing file named by `path` or PGVIP_CONFIG is an error.
    Raises ConfigError listing every problem; warnings of a usable config are in `.warnings`.
    """
    problems: list[ConfigProblem] = []
    explicit = path if path is not None else (env.get(ENV_CONFIG) or None)
    file_path = Path(explicit) if explicit is not None else default_path
    data: dict[str, Any] = {}
    read: Path | None = None
    if explicit is not None or file_path.exists():
        before = len(problems)
        data = _read_toml(file_path, problems)
        read = file_path
        file_failed = len(problems) > before
    else:
        file_failed = False
    layers = [
        file_values(data, str(file_path), problems),
        env_values(env, problems),
        flag_values(flags, problems),
    ]
    return _build(layers, problems, read, file_failed=file_failed)


def config_from_mapping(
    data: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, object] | None = None,
    *,
    source: str = "<mapping>",
) -> Config:
    """Validate already-parsed TOML data (tests, the lab) exactly like a file's."""
    problems: list[ConfigProblem] = []
    layers = [
        file_values(data, source, problems),
        env_values(env or {}, problems),
        flag_values(flags or {}, problems),
    ]
    return _build(layers, problems, None)


def read_password_file(path: str, key: str = "patroni.password_file") -> str:
    """Read a one-line password file at run time; raises ConfigError naming the key and path."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([ConfigProblem(key, path, None, f"cannot read {key}: {why}")]) from exc
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError([ConfigProblem(key, path, None, f"{key} is empty")])
    if "\n" in password:
        raise ConfigError([ConfigProblem(key, path, None, f"{key} must hold a single line")])
    return password
