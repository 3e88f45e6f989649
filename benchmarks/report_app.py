"""The report's application view (issue 12): what clients that connect the way applications do
saw in each RW event (pgvip/lab/app_clients.py), the RO events counted by every failed read,
and the goals they are read against. Results files from before the app clients have no "app"
records; their sections are simply absent."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from benchmarks.markdown import contender_order, fmt_s, rw_events, table, triple
from benchmarks.stats import percentile, summarize

MODELS = {
    "persistent": "(a) one connection, reconnect at once, connect deadline 1 s",
    "libpq": "(b) libpq defaults (no connect timeout: the kernel's SYN retransmits)",
    "pool": "(c) psycopg_pool, 4 connections",
}
# Issue 12's goals, read with model (a): extra gap over the direct client, p50 and max (s).
RW_GOALS = {"switchover": (0.05, 0.15), "kill": (0.10, 0.25)}
RO_STOP_WINDOW = 0.3  # s, first to last failed read, median over events
RO_STOP_READS = 5  # failed reads at 20 ms pacing, median over events
LOST_SYN_MS = 1000.0  # an attempt this long waited out a SYN retransmit
PGVIP = ("pgvip-lab", "pgvip-stock", "pgvip", "pgvip-ro")
TITLES = {"switchover": "planned switchover", "kill": "kill -9 of the leader"}


def _kinds(counts: Iterable[Mapping[str, int]]) -> str:
    total: Counter[str] = Counter()
    for c in counts:
        total.update(c)
    return ", ".join(f"{k}: {v}" for k, v in total.most_common()) or "none"


def _p50_max(values: Sequence[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "—"
    return f"{fmt.format(percentile(values, 50))} / {fmt.format(max(values))}"


def _app_events(doc: Mapping[str, Any], scenario: str, name: str, model: str) -> list[Any]:
    return [
        e["app"][model]
        for e in rw_events(doc, scenario, name)
        if model in e.get("app", {}) and e["app"][model].get("valid")
    ]


def app_sections(doc: Mapping[str, Any]) -> list[str]:
    """One table per RW scenario: per contender and app model, the extra gap over the same
    client following the leader directly, beside the sampler's figure (the VIP's own move)."""
    lines: list[str] = []
    for scenario in ("switchover", "kill"):
        rows = []
        for name in contender_order(doc):
            own = summarize(e.get("attributable") for e in rw_events(doc, scenario, name))
            for model, label in MODELS.items():
                apps = _app_events(doc, scenario, name, model)
                if not apps:
                    continue
                counts = [float(a["failures"]["count"]) for a in apps]
                windows = [float(a["failures"]["window"]) for a in apps]
                longest = [float(a["failures"]["max_attempt_ms"]) / 1000 for a in apps]
                lost = sum(1 for a in apps if a["failures"]["max_attempt_ms"] >= LOST_SYN_MS)
                rows.append((
                    name, label.split(" ", 1)[0], str(len(apps)),
                    triple(summarize(a.get("extra") for a in apps), sign=True),
                    triple(own, sign=True),
                    _p50_max(counts), _p50_max(windows, "{:.2f}"),
                    _kinds(a["failures"]["kinds"] for a in apps),
                    f"{max(longest):.2f}", str(lost),
                ))  # fmt: skip
        if rows:
            header = ["contender", "client", "n", "**extra over direct** p50 / p95 / max (s)",
                      "sampler (VIP's own move) p50 / p95 / max (s)",
                      "failed attempts per event p50 / max", "first-to-last failure p50 / max (s)",
                      "kinds (all events)", "longest attempt (s)",
                      "events with an attempt ≥ 1 s"]  # fmt: skip
            lines += [f"#### Application view: {TITLES[scenario]}", ""] + table(header, rows)
            lines.append("")
    if not lines:
        return []
    return lines + [
        "Clients: " + "; ".join(MODELS.values()) + ". Each does one thing at a time every "
        "20 ms and inserts a row; its twin does the same straight to the node Patroni's "
        "/cluster names leader (the pool's twin is model (a)'s). Extra: the gap through the "
        "contender minus the twin's in the same event. The sampler column is the "
        "overlapping-attempt client of the tables above, which a lost SYN does not delay.",
        "",
    ]


def _ro_count(c: Mapping[str, Any]) -> tuple[int, float | None]:
    """Failed reads and first-to-last window of the sampler's reader (old files: gap only)."""
    if "failures" in c:
        return int(c["failures"]["count"]), float(c["failures"]["window"])
    path = c.get("path", {})
    return int(path.get("failures", 0)) + int(path.get("later_failures", 0)), None


def _app(c: Mapping[str, Any]) -> str:
    a = c.get("app")
    return "—" if a is None else f"{a['count']} over {a['window']:.2f} s"


AWAY_TITLES = {
    "replica-restart": "Replica stopped (Patroni SIGTERM: PostgreSQL's fast shutdown) for 3 s "
    "and restarted",
    "replica-pg-kill": "Replica's postmaster killed (kill -9); Patroni restarts it",
    "replica-gone": "Replica's whole node cut off the switch for 5 s (as a power cut), then healed",
}


def _away(events: Sequence[Any], scenario: str) -> list[Any]:
    return [e for e in events if e.get("scenario", "replica-restart") == scenario]


def ro_event_sections(doc: Mapping[str, Any]) -> list[str]:
    """The RO events (replicas taken away, and drains): every event, then per contender the
    medians the goals are read against."""
    events = (doc.get("ro") or {}).get("events", [])
    interval = doc.get("settings", {}).get("interval", 0.02) * 1000
    lines: list[str] = []
    drains = [e for e in events if e.get("scenario") == "replica-drain"]
    rows: list[tuple[str, ...]]
    for scenario, title in AWAY_TITLES.items():
        away = _away(events, scenario)
        if not away:
            continue
        rows = []
        for e in away:
            flag = e.get("director")
            director = "—" if flag is None else ("yes" if flag else "no")
            if "error" in e:
                rows.append((str(e.get("id")), e.get("detail", ""), director, "—", "error",
                             e["error"][:80], "—", "—", "—", "—"))  # fmt: skip
                continue
            for name, c in e.get("contenders", {}).items():
                count, window = _ro_count(c)
                back = c.get("reincluded_after")
                rows.append((
                    str(e.get("id")), e.get("detail", ""), director, name, str(count),
                    fmt_s(window), _app(c), fmt_s(c["path"]["gap"]),
                    fmt_s(back, " s", True) if back is not None else "not within 20 s",
                    ", ".join(f"{k}: {v}" for k, v in sorted(c.get("served", {}).items())),
                ))  # fmt: skip
        header = ["#", "replica", "pgvip's RO director?", "contender", "failed reads (sampler)",
                  "sampler first-to-last failure", "app reader: failed over",
                  "read gap (until 1 s clean)", "first read to it after Patroni ready",
                  "reads served per node"]  # fmt: skip
        lines += [f"{title}; the sampler reads every {interval:.0f} ms through every RO "
                  "contender at once, and the app reader opens a new connection per read (1 s "
                  "deadline, paced 10–30 ms):", ""] + table(header, rows) + [""]  # fmt: skip
    if drains:
        rows = []
        for e in drains:
            if "error" in e:
                rows.append((str(e.get("id")), e.get("detail", ""), "—", "error", e["error"][:80],
                             "—", "—"))  # fmt: skip
                continue
            for name, c in e.get("contenders", {}).items():
                rows.append((
                    str(e.get("id")), e.get("detail", ""), name,
                    str(c["failures"]["count"]), _app(c),
                    fmt_s(c.get("left_after")) if c.get("left_after") is not None
                    else "kept serving",
                    fmt_s(c.get("back_after")) if c.get("back_after") is not None else "not back",
                ))  # fmt: skip
        header = [
            "#",
            "replica",
            "contender",
            "failed reads (sampler)",
            "app reader: failed",
            "last read it served after the tag",
            "first read it served after untag",
        ]
        lines += ["Replica drained on purpose (Patroni tag `noloadbalance` set, held 3 s after "
                  "every contender stopped sending it reads, then cleared):",
                  ""] + table(header, rows) + [""]  # fmt: skip
    return lines + _ro_summary(events, drains)


def _ro_summary(events: Sequence[Any], drains: Sequence[Any]) -> list[str]:
    rows = []
    names = list(dict.fromkeys(n for e in events for n in e.get("contenders", {})))
    for name in names:
        for scenario in AWAY_TITLES:
            rs = [e["contenders"][name] for e in _away(events, scenario)
                  if name in e.get("contenders", {})]  # fmt: skip
            if not rs:
                continue
            app_r = [c["app"] for c in rs if "app" in c]
            timeouts = sum(int(a.get("kinds", {}).get("timeout", 0)) for a in app_r)
            rows.append((
                name, scenario, str(len(rs)),
                _p50_max([float(a["count"]) for a in app_r]),
                _p50_max([float(a["window"]) for a in app_r], "{:.2f}"),
                str(timeouts) if app_r else "—",
                _p50_max([float(_ro_count(c)[0]) for c in rs]),
            ))  # fmt: skip
        ds = [e["contenders"][name] for e in drains if name in e.get("contenders", {})]
        if ds:
            app_d = [c["app"] for c in ds if "app" in c]
            rows.append((
                name, "replica-drain", str(len(ds)),
                str(sum(int(a["count"]) for a in app_d)) + " (all)" if app_d else "—", "—", "—",
                str(sum(int(c["failures"]["count"]) for c in ds)) + " (all)",
            ))  # fmt: skip
    if not rows:
        return []
    header = ["contender", "event", "n", "app reader failed reads p50 / max",
              "app reader first-to-last failure p50 / max (s)",
              "app reader timeouts (all events)", "sampler failed reads p50 / max"]  # fmt: skip
    return ["RO events per contender:", ""] + table(header, rows) + [""]


def goals(doc: Mapping[str, Any]) -> list[str]:
    """Issue 12's goals for each pgvip contender, met or missed, with the figure."""
    rows = []
    for name in contender_order(doc):
        if name not in PGVIP:
            continue
        for scenario, (p50_goal, max_goal) in RW_GOALS.items():
            s = summarize(a.get("extra") for a in _app_events(doc, scenario, name, "persistent"))
            if s.n == 0:
                continue
            met = s.p50 is not None and s.max is not None and not s.missing
            met = met and s.p50 <= p50_goal and s.max <= max_goal  # type: ignore[operator]
            rows.append((f"{name}: {TITLES[scenario]}, app client (a) extra ≤ {p50_goal:.2f} s "
                         f"p50, ≤ {max_goal:.2f} s max",
                         f"{fmt_s(s.p50, ' s', True)} p50, {fmt_s(s.max, ' s', True)} max "
                         f"(n = {s.n}{f', {s.missing} never recovered' if s.missing else ''})",
                         "met" if met else "**missed**"))  # fmt: skip
        libpq = [a for sc in RW_GOALS for a in _app_events(doc, sc, name, "libpq")]
        if libpq:
            worst = max(float(a["failures"]["max_attempt_ms"]) for a in libpq) / 1000
            lost = sum(1 for a in libpq if a["failures"]["max_attempt_ms"] >= LOST_SYN_MS)
            rows.append((f"{name}: libpq-default client (b), no attempt ≥ 1 s",
                         f"{lost} of {len(libpq)} events; longest attempt {worst:.2f} s",
                         "met" if lost == 0 else "**missed**"))  # fmt: skip
    events = (doc.get("ro") or {}).get("events", [])
    for name in PGVIP:
        for scenario, what in (("replica-restart", "replica stopped"),
                               ("replica-pg-kill", "replica's postmaster killed")):  # fmt: skip
            rs = [e["contenders"][name]["app"] for e in _away(events, scenario)
                  if "app" in e.get("contenders", {}).get(name, {})]  # fmt: skip
            if not rs:
                continue
            w = percentile([float(a["window"]) for a in rs], 50)
            n = percentile([float(a["count"]) for a in rs], 50)
            met = w <= RO_STOP_WINDOW and n <= RO_STOP_READS
            rows.append((f"{name}: {what}, ≤ {RO_STOP_WINDOW} s first-to-last failed "
                         f"read and ≤ {RO_STOP_READS} failed reads (medians)",
                         f"{w:.2f} s, {n:.0f} reads (n = {len(rs)})",
                         "met" if met else "**missed**"))  # fmt: skip
        ds = [e["contenders"][name]["app"] for e in events if e.get("scenario") == "replica-drain"
              and "app" in e.get("contenders", {}).get(name, {})]  # fmt: skip
        if ds:
            total = sum(int(a["count"]) for a in ds)
            rows.append(
                (
                    f"{name}: drained replica (noloadbalance), 0 failed reads",
                    f"{total} in {len(ds)} drains",
                    "met" if total == 0 else "**missed**",
                )
            )
    if not rows:
        return []
    return ["#### Goals (issue 12)", ""] + table(["goal", "measured", ""], rows) + [""]
