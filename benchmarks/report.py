"""The results section of BENCHMARKS.md, rendered from a run's JSON: machine and versions, one
table per scenario (p50/p95/max and the contender-attributable column), the idle footprint, the RO
numbers and the targets; plus reading and writing that JSON in a diff-friendly layout."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.markdown import (
    contender_order,
    rw_events,
)
from benchmarks.markdown import (
    fmt_s as _s,
)
from benchmarks.markdown import (
    table as _table,
)
from benchmarks.markdown import (
    triple as _triple,
)
from benchmarks.report_app import app_sections, goals, ro_event_sections
from benchmarks.stats import Summary, percentile, summarize

BEGIN = "<!-- BEGIN GENERATED RESULTS (python -m benchmarks rewrites this part) -->"
END = "<!-- END GENERATED RESULTS -->"
SCENARIO_TITLES = {
    "switchover": "P1: planned switchover (Patroni REST POST /switchover)",
    "kill": "P2: kill -9 of the leader's Patroni + PostgreSQL (unplanned failover)",
}
# Issue 3's targets for pgvip.
TARGET_ATTRIBUTABLE_P95 = 0.25
TARGET_RSS_MIB = 40.0
TARGET_IDLE_CPU_PCT = 1.0


class ReportError(ValueError):
    """A results file is missing, not JSON, or not of a schema this report knows."""


# -- the JSON file ---------------------------------------------------------------


def dumps(doc: Any, indent: int = 1) -> str:
    """JSON with nested objects indented but every list of scalars on one line (the samples)."""

    def enc(obj: Any, level: int) -> str:
        pad = " " * (indent * (level + 1))
        end = " " * (indent * level)
        if isinstance(obj, Mapping):
            if not obj:
                return "{}"
            items = [f"{pad}{json.dumps(str(k))}: {enc(v, level + 1)}" for k, v in obj.items()]
            return "{\n" + ",\n".join(items) + "\n" + end + "}"
        if isinstance(obj, list | tuple):
            if all(not isinstance(v, Mapping | list | tuple) for v in obj):
                return json.dumps(list(obj), separators=(",", ":"))
            return "[\n" + ",\n".join(pad + enc(v, level + 1) for v in obj) + "\n" + end + "]"
        return json.dumps(obj)

    return enc(doc, 0) + "\n"


def load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise ReportError(f"no results file {path}") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("schema") != 1:
        raise ReportError(f"{path} is not a benchmark results file of schema 1")
    return doc


def attributable_summary(doc: Mapping[str, Any], scenario: str, contender: str) -> Summary:
    return summarize(e.get("attributable") for e in rw_events(doc, scenario, contender))


def _side(e: Mapping[str, Any]) -> Mapping[str, Any]:
    return e.get("holders") or e.get("routing") or {}


# -- sections --------------------------------------------------------------------


def _header(doc: Mapping[str, Any]) -> list[str]:
    m = doc.get("machine", {})
    s = doc.get("settings", {})
    lab = doc.get("lab", {})
    status = "complete" if doc.get("complete") else "INCOMPLETE"
    lines = [
        f"### Run `{doc.get('run_id')}` ({status})",
        "",
        f"Started {doc.get('started')}, took {doc.get('duration_s', 0) / 60:.1f} min. "
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, "
        f"kernel {m.get('kernel')}, {m.get('os')}. Load average "
        f"{m.get('loadavg_start')} at the start, {m.get('loadavg_end')} at the end "
        "(other engineers' tests share these two cores: expect noise).",
        "",
        f"Lab: 3 nodes, Patroni ttl {lab.get('patroni', {}).get('ttl')}, loop_wait "
        f"{lab.get('patroni', {}).get('loop_wait')}. Client: one write every "
        f"{s.get('interval', 0) * 1000:.0f} ms through the contender and one straight to the "
        f"node Patroni's /cluster names leader, each attempt cut off at {s.get('timeout')} s "
        f"by the client itself. RW: {s.get('rounds')} rounds, each contender's turn "
        f"{s.get('switchovers_per_round')} switchover(s) + {s.get('kills_per_round')} kill(s), "
        f"order rotated every round, a random pause of up to {s.get('jitter', 0)} s before each "
        f"event (seed {s.get('seed')}).",
        "",
    ]
    if doc.get("errors"):
        lines += ["Errors during the run:", ""] + [f"- {e}" for e in doc["errors"]] + [""]
    versions = doc.get("versions", {})
    if versions:
        lines += _table(["component", "version"], sorted(versions.items())) + [""]
    return lines


def _targets(doc: Mapping[str, Any]) -> list[str]:
    rows = []
    for name in ("pgvip-lab", "pgvip-stock"):
        summ = attributable_summary(doc, "switchover", name)
        if summ.n:
            met = summ.p95 is not None and summ.p95 <= TARGET_ATTRIBUTABLE_P95 and not summ.missing
            rows.append(
                (
                    f"{name}: switchover gap attributable to pgvip, p95 ≤ "
                    f"{TARGET_ATTRIBUTABLE_P95} s",
                    f"{_s(summ.p95, ' s', True)} (n = {summ.n})",
                    "met" if met else "**missed**",
                )
            )
        fp = doc.get("footprint", {}).get(name)
        if fp:
            rss = max(v["rss_mib"] for v in fp.values())
            cpu = sum(v["cpu_pct"] for v in fp.values()) / len(fp)
            rows.append(
                (
                    f"{name}: RSS ≤ {TARGET_RSS_MIB:.0f} MiB",
                    f"{rss:.1f} MiB (largest node)",
                    "met" if rss <= TARGET_RSS_MIB else "**missed**",
                )
            )
            rows.append(
                (
                    f"{name}: idle CPU ≤ {TARGET_IDLE_CPU_PCT:.0f} % of a core",
                    f"{cpu:.2f} % (mean of nodes, {next(iter(fp.values()))['window_s']:.0f} s)",
                    "met" if cpu <= TARGET_IDLE_CPU_PCT else "**missed**",
                )
            )
    if not rows:
        return []
    return ["#### Targets (issue 3)", ""] + _table(["target", "measured", ""], rows) + [""]


def _scenario(doc: Mapping[str, Any], scenario: str) -> list[str]:
    rows = []
    for name in contender_order(doc):
        events = rw_events(doc, scenario, name)
        failed = [
            e for e in doc.get("events", [])
            if e.get("contender") == name and e.get("scenario") == scenario
            and ("error" in e or not e.get("valid", False))
        ]  # fmt: skip
        if not events and not failed:
            continue
        ro = [int(e.get("read_only_writes", 0)) for e in events]
        spans = [m["end"] - m["start"] for e in events for m in _side(e).get("multi", [])]
        multi = str(len(spans)) + (f" (lasting {_s(min(spans))}–{_s(max(spans))})" if spans else "")
        kind = "routable" if any("routing" in e for e in events) else "holders"
        rows.append(
            (
                name,
                str(len(events)) + (f" (+{len(failed)} not measured)" if failed else ""),
                _triple(summarize(e["patroni"]["gap"] for e in events)),
                _triple(summarize(e["through"]["gap"] for e in events)),
                _triple(summarize(e.get("attributable") for e in events), sign=True),
                f"{sum(ro)} / {max(ro, default=0)}",
                f"{max((_side(e).get('max_holders', 0) for e in events), default=0)} {kind}",
                multi,
            )
        )
    if not rows:
        return []
    header = [
        "contender",
        "n",
        "Patroni's own gap p50 / p95 / max (s)",
        "gap through contender p50 / p95 / max (s)",
        "**attributable** p50 / p95 / max (s)",
        "writes failed read-only: total / worst event",
        "max RW holders (VIP) or routable servers (proxy)",
        "moments with two at once",
    ]
    return [f"#### {SCENARIO_TITLES.get(scenario, scenario)}", ""] + _table(header, rows) + [""]


def _events_detail(doc: Mapping[str, Any]) -> list[str]:
    rows = []
    for e in doc.get("events", []):
        if "error" in e:
            rows.append((e.get("id"), e.get("round"), e.get("contender"), e.get("scenario"),
                         "—", "—", "—", f"error: {e['error'][:80]}", "—", "—"))  # fmt: skip
            continue
        side = _side(e)
        rows.append(
            (
                e.get("id"),
                e.get("round"),
                e["contender"],
                e["scenario"],
                e.get("detail"),
                _s(e["patroni"]["gap"]),
                _s(e["through"]["gap"]),
                _s(e.get("attributable"), " s", True) + ("" if e.get("valid") else " (invalid)"),
                e.get("read_only_writes", 0),
                side.get("max_holders", "—"),
            )
        )
    if not rows:
        return []
    header = ["#", "round", "contender", "scenario", "leader", "Patroni", "contender",
              "attributable", "read-only writes", "max holders/routable"]  # fmt: skip
    return (
        ["<details><summary>Every RW event</summary>", ""]
        + _table(header, [[str(c) for c in r] for r in rows])
        + ["", "</details>", ""]
    )


def _footprint(doc: Mapping[str, Any]) -> list[str]:
    fps = doc.get("footprint", {})
    if not fps:
        return []
    loads = doc.get("patroni_load", {})

    def patroni(name: str) -> str:
        load = loads.get(name)
        if not load:
            return "—"
        return f"{sum(load.values()) / len(load):.2f}"

    rows = []
    for name, fp in fps.items():
        hosts = sorted(fp)
        cpu = [fp[h]["cpu_pct"] for h in hosts]
        rss = [fp[h]["rss_mib"] for h in hosts]
        startup = doc.get("startup", {}).get(name, [])
        rows.append(
            (
                name,
                ", ".join(hosts),
                f"{sum(cpu) / len(cpu):.2f} ({', '.join(f'{c:.2f}' for c in cpu)})",
                ", ".join(f"{r:.1f}" for r in rss),
                str(fp[hosts[0]]["processes"]),
                (f"{min(startup):.1f}–{max(startup):.1f}" if startup else "—"),
                patroni(name),
            )
        )
    if "none" in loads:
        rows.insert(0, ("(none running)", "", "", "", "", "", patroni("none")))
    header = ["contender", "hosts", "idle CPU % of a core: mean (per host)", "RSS MiB per host",
              "processes per host", "start → RW ready (s)",
              "meanwhile, each node's Patroni: CPU % (mean)"]  # fmt: skip
    window = next(iter(next(iter(fps.values())).values()))["window_s"]
    return (
        [f"#### Idle footprint ({window:.0f} s window, no client running)", ""]
        + _table(header, rows)
        + [
            "",
            "keepalived's CPU includes its reaped `curl` checks (cutime of the VRRP child). The "
            "last column is what the contender's health checks cost Patroni (every REST health "
            "GET makes Patroni run a query); compare it with the first row, measured with no "
            "contender running.",
            "",
        ]
    )


def _ro(doc: Mapping[str, Any]) -> list[str]:
    ro = doc.get("ro")
    if not ro:
        return []
    s = doc.get("settings", {})
    lines = [f"#### P3: read-only side (pgbench -S -c {s.get('pgbench_clients')} -T "
             f"{s.get('pgbench_seconds')}, scale {s.get('pgbench_scale')})", ""]  # fmt: skip
    for name, info in ro.get("contenders", {}).items():
        if not info.get("available"):
            lines.append(f"- {name}: RO side unavailable: {info.get('reason')}")
    runs = ro.get("pgbench", [])
    if runs:
        by: dict[str, list[dict[str, Any]]] = {}
        for r in runs:
            by.setdefault(r["target"], []).append(r)
        direct = [r["tps"] for r in by.get("direct", [])]
        base = percentile(direct, 50) if direct else None
        base_mean = sum(direct) / len(direct) if direct else None
        rows: list[tuple[str, ...]] = []
        for target, rs in by.items():
            tps = [r["tps"] for r in rs]
            mean = sum(tps) / len(tps)
            median = percentile(tps, 50)
            cpu = [r["contender_cpu_pct"] for r in rs if "contender_cpu_pct" in r]
            rows.append(
                (
                    target,
                    ", ".join(f"{t:.0f}" for t in tps),
                    f"{median:.0f}",
                    f"{median / base:.2f}" if base else "—",
                    f"{mean / base_mean:.2f}" if base_mean else "—",
                    f"{sum(cpu) / len(cpu):.0f} %" if cpu else "—",
                    ", ".join(rs[0].get("endpoints", [])),
                )
            )
        header = ["target", "tps per run (in run order)", "median tps", "÷ direct (medians)",
                  "÷ direct (means)", "contender CPU during run", "address(es)"]  # fmt: skip
        lines += ([""] if lines[-1] else []) + _table(header, rows) + [""]
    balance = ro.get("balance", {})
    if balance:
        rows = []
        replicas = ro.get("replicas", [])
        for name, b in balance.items():
            counts = b.get("counts", {})
            values = [counts.get(r, 0) for r in replicas] or list(counts.values())
            ratio = (max(values) / min(values)) if values and min(values) else None
            rows.append(
                (
                    name,
                    ", ".join(f"{k}: {v}" for k, v in counts.items()),
                    f"{ratio:.2f}" if ratio else "∞ (a replica got none)",
                    str(sum(b.get("errors", {}).values())),
                )
            )
        lines += [f"Balance over {s.get('balance_connects')} fresh connections "
                  "(`select current_setting('pgvip.node')`):", ""]  # fmt: skip
        lines += _table(["contender", "connections per node", "max/min", "errors"], rows) + [""]
    lines += ro_event_sections(doc)
    return lines


def _contenders(doc: Mapping[str, Any]) -> list[str]:
    lines = ["#### Contenders as run", ""]
    for name, d in doc.get("contenders", {}).items():
        lines.append(f"- **{name}**: {d.get('summary')}")
    ro = doc.get("ro") or {}
    for name, info in ro.get("contenders", {}).items():
        if name not in doc.get("contenders", {}):
            lines.append(f"- **{name}** (RO phase): {info['description'].get('summary')}")
    for name, why in doc.get("unavailable", {}).items():
        lines.append(f"- **{name}**: not run: {why}")
    return lines + [""]


def render(
    doc: Mapping[str, Any], *, images: Sequence[Path] = (), relative_to: Path | None = None
) -> str:
    """The generated section (without the markers)."""
    lines = _header(doc) + _contenders(doc) + _targets(doc) + goals(doc)
    for scenario in ("switchover", "kill"):
        lines += _scenario(doc, scenario)
    lines += [
        "Gap: from the last successful write before the first failure to the first write of a "
        "run of 1 s without failures. Attributable: the contender's gap minus Patroni's own "
        "(the writer that follows the leader directly) in the same event; negative values are "
        "noise between the two writers. p95 of fewer than 20 events lies between the two "
        "largest values.",
        "",
    ]
    lines += app_sections(doc)
    lines += _events_detail(doc) + _footprint(doc) + _ro(doc)
    for image in images:
        rel = os.path.relpath(image, relative_to) if relative_to else str(image)
        lines += [f"![{image.stem}]({rel})", ""]
    return "\n".join(lines).rstrip() + "\n"


def update_markdown(md: Path, section: str) -> None:
    """Replace the generated part of `md` (between the markers), or append it."""
    text = md.read_text() if md.exists() else ""
    block = f"{BEGIN}\n\n{section}\n{END}"
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + block + tail
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    md.write_text(text)
