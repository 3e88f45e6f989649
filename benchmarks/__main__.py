"""`python -m benchmarks`: run the whole side-by-side benchmark (lab up, every contender in turn,
the RO phase, lab down), then write the JSON, the plots and the results section of BENCHMARKS.md.
`python -m benchmarks report RESULTS.json` redoes the last two from a saved run."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.recorder import REPO_ROOT

BENCHMARKS_MD = REPO_ROOT / "BENCHMARKS.md"


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def build_parser() -> argparse.ArgumentParser:
    from benchmarks.suite import Settings

    d = Settings()
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the benchmark (the default)")
    run.add_argument("--prefix", default=d.prefix, help="lab prefix (default %(default)s)")
    run.add_argument("--subnet", default=d.subnet, help="lab subnet (default %(default)s)")
    run.add_argument(
        "--contenders",
        type=_csv,
        default=d.contenders,
        help="RW contenders, comma-separated (default %(default)s)",
    )
    run.add_argument(
        "--rounds",
        type=int,
        default=d.rounds,
        help="RW rounds; each gives every contender one turn (default %(default)s)",
    )
    run.add_argument(
        "--switchovers",
        type=int,
        default=d.switchovers_per_round,
        help="switchovers per contender per round (default %(default)s)",
    )
    run.add_argument(
        "--kills",
        type=int,
        default=d.kills_per_round,
        help="kill -9 of the leader per contender per round (default %(default)s)",
    )
    run.add_argument(
        "--replica-restarts",
        type=int,
        default=d.replica_restarts,
        help="replica stop/start events in the RO phase (default %(default)s)",
    )
    run.add_argument(
        "--replica-kills",
        type=int,
        default=d.replica_kills,
        help="kill -9 of a replica's postmaster in the RO phase (default %(default)s)",
    )
    run.add_argument(
        "--replica-gone",
        type=int,
        default=d.replica_gone,
        help="a replica's node cut off the switch for 5 s in the RO phase (default %(default)s)",
    )
    run.add_argument(
        "--replica-drains",
        type=int,
        default=d.replica_drains,
        help="replica drains (Patroni tag noloadbalance) in the RO phase (default %(default)s)",
    )
    run.add_argument(
        "--app-models",
        type=_csv,
        default=d.app_models,
        help="application-model clients beside the sampler: persistent, libpq, pool "
        "(comma-separated; '' for none; default all)",
    )
    run.add_argument(
        "--only",
        choices=["switchover", "kill", "ro"],
        help="run one part only (switchover or kill: no RO phase)",
    )
    run.add_argument("--no-ro", action="store_true", help="skip the RO phase")
    run.add_argument(
        "--no-pgvip-ro", action="store_true", help="leave pgvip's RO VIP out of the RO phase"
    )
    run.add_argument(
        "--clients",
        type=int,
        default=d.pgbench_clients,
        help="pgbench clients (default %(default)s)",
    )
    run.add_argument("--pgbench-seconds", type=int, default=d.pgbench_seconds)
    run.add_argument("--pgbench-rounds", type=int, default=d.pgbench_rounds)
    run.add_argument(
        "--balance",
        type=int,
        default=d.balance_connects,
        help="connections for the balance count (default %(default)s)",
    )
    run.add_argument(
        "--footprint",
        type=float,
        default=d.footprint_window,
        help="seconds of idle CPU/RSS measurement per contender (0: skip)",
    )
    run.add_argument(
        "--jitter",
        type=float,
        default=d.jitter,
        help="random pause of up to this many s before each event (default %(default)s)",
    )
    run.add_argument("--seed", type=int, default=d.seed, help="seed of that pause (default 1)")
    run.add_argument(
        "--interval",
        type=float,
        default=d.interval,
        help="client sample interval, s (default %(default)s)",
    )
    run.add_argument(
        "--keepalived-weight",
        type=int,
        default=d.keepalived_weight,
        help="vrrp_script weight (0 = the seed's tested config: FAULT on failure)",
    )
    run.add_argument(
        "--keepalived-vrrp-version", type=int, choices=[2, 3], default=d.keepalived_vrrp_version
    )
    run.add_argument("--out", default=d.out_dir, help="results directory (default %(default)s)")
    run.add_argument("--keep-lab", action="store_true", help="leave the lab up afterwards")
    run.add_argument(
        "--no-report",
        action="store_true",
        help="write only the JSON (no plots, BENCHMARKS.md untouched)",
    )
    rep = sub.add_parser("report", help="plots and BENCHMARKS.md section from a results JSON")
    rep.add_argument("results", type=Path)
    rep.add_argument("--md", type=Path, default=BENCHMARKS_MD)
    rep.add_argument("--no-plots", action="store_true")
    return p


def settings_from(args: argparse.Namespace) -> object:
    from benchmarks.suite import Settings

    s = Settings(
        prefix=args.prefix,
        subnet=args.subnet,
        contenders=list(args.contenders),
        rounds=args.rounds,
        switchovers_per_round=args.switchovers,
        kills_per_round=args.kills,
        ro=not args.no_ro,
        pgvip_ro=not args.no_pgvip_ro,
        replica_restarts=args.replica_restarts,
        replica_kills=args.replica_kills,
        replica_gone=args.replica_gone,
        replica_drains=args.replica_drains,
        app_models=list(args.app_models),
        pgbench_clients=args.clients,
        pgbench_seconds=args.pgbench_seconds,
        pgbench_rounds=args.pgbench_rounds,
        balance_connects=args.balance,
        footprint_window=args.footprint,
        interval=args.interval,
        jitter=args.jitter,
        seed=args.seed,
        keepalived_weight=args.keepalived_weight,
        keepalived_vrrp_version=args.keepalived_vrrp_version,
        out_dir=args.out,
        keep_lab=args.keep_lab,
    )
    if args.only == "switchover":
        s.kills_per_round, s.ro = 0, False
    elif args.only == "kill":
        s.switchovers_per_round, s.ro = 0, False
    elif args.only == "ro":
        s.contenders = []
    return s


def report(results: Path, md: Path, *, with_plots: bool = True) -> None:
    import benchmarks.plots as plots_mod
    import benchmarks.report as report_mod

    doc = report_mod.load(results)
    images: list[Path] = []
    if with_plots:
        images = plots_mod.make_all(doc, results.parent)
    section = report_mod.render(doc, images=images, relative_to=md.parent)
    report_mod.update_markdown(md, section)
    print(f"wrote {md} ({len(images)} plots)")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in ("run", "report", "-h", "--help"):
        args_list = ["run", *args_list]
    args = build_parser().parse_args(args_list)
    if args.command == "report":
        report(args.results, args.md, with_plots=not args.no_plots)
        return 0
    if os.geteuid() != 0:
        print("benchmarks: needs root (it builds the netns lab)", file=sys.stderr)
        return 2
    from benchmarks.contenders import ContenderError
    from benchmarks.suite import Suite, SuiteError

    try:
        suite = Suite(settings_from(args))  # type: ignore[arg-type]
    except (SuiteError, ContenderError) as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 2
    path = suite.run()
    if not args.no_report:
        report(path, BENCHMARKS_MD)
    return 0 if suite.results["complete"] and not suite.results["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
