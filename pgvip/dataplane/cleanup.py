"""Finding and deleting the nftables tables of pgvip instances, for `pgvip release`.

A crashed daemon cannot say which tables it left, but their names do (`pgvip.naming`): with a
config, `release` deletes only that instance's three; without one, every pgvip table of every
instance (a host-wide clean-up).
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from pgvip.dataplane.command import run_command
from pgvip.naming import StateNames, table_instance

Table = tuple[str, str]  # (family, name)


async def pgvip_tables(nft: str, *, netns: str | None = None) -> list[Table]:
    """Every table some pgvip instance (named or not) owns, in any family."""
    listing = json.loads(await run_command([nft, "-j", "list", "tables"], netns=netns))
    found: list[Table] = []
    for item in listing.get("nftables", []):
        table = item.get("table") if isinstance(item, dict) else None
        if isinstance(table, dict) and table_instance(str(table.get("name"))) is not None:
            found.append((str(table.get("family")), str(table.get("name"))))
    return found


def instance_tables(tables: Iterable[Table], names: StateNames) -> list[Table]:
    """Those of `tables` that instance `names` owns."""
    mine = {names.balancer_table, names.masquerade_table, names.guard_table}
    return [t for t in tables if t[1] in mine]


async def delete_tables(nft: str, tables: Iterable[Table], *, netns: str | None = None) -> None:
    """Delete `tables` in one transaction (add-then-delete: a table gone meanwhile is fine)."""
    script = "".join(f"table {fam} {name}\ndelete table {fam} {name}\n" for fam, name in tables)
    if script:
        await run_command([nft, "-f", "-"], stdin=script, netns=netns)
