#!/usr/bin/env python3
"""Write docs/config-reference.md from pgvip.config.reference_markdown(), so the reference is
generated from the schema and cannot drift; `--check` only reports whether it is up to date.

    /opt/pgvip/venv/bin/python scripts/gen-config-reference.py           # rewrite the file
    /opt/pgvip/venv/bin/python scripts/gen-config-reference.py --check   # exit 1 if stale

tests/unit/test_docs.py fails when the file and the schema disagree.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = REPO / "docs" / "config-reference.md"

# Run from a checkout without an installed pgvip too (e.g. `python3 scripts/...`).
sys.path.insert(0, str(REPO))

from pgvip.config import reference_markdown  # noqa: E402 - needs the path set above


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the file differs from the schema's reference",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=TARGET,
        help=f"where to write (default {TARGET.relative_to(REPO)})",
    )
    args = parser.parse_args(argv)
    text = reference_markdown()
    if args.check:
        try:
            current = args.output.read_text(encoding="utf-8")
        except FileNotFoundError:
            current = None
        if current != text:
            print(
                f"{args.output} is out of date with pgvip.config.SCHEMA; "
                f"run: python {Path(__file__).relative_to(REPO)}",
                file=sys.stderr,
            )
            return 1
        print(f"{args.output}: up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
