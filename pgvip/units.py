"""Sizes written the PostgreSQL way ("16MB", "512kB"): the one parser for the config's
`ro.max_lag` and for sizes as Patroni writes them.

Units are powers of 1024, as in postgresql.conf and Patroni.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

# PostgreSQL's memory units, which Patroni's `?lag=` and `maximum_lag_on_failover` accept.
SIZE_UNITS: Mapping[str, int] = {
    "B": 1,
    "kB": 1024,
    "MB": 1024**2,
    "GB": 1024**3,
    "TB": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*$")


class SizeError(ValueError):
    """A size such as `max_lag = "16MB"` is not a number of bytes with a PostgreSQL unit."""


def parse_size(value: int | str, *, case_sensitive: bool = True, fractions: bool = True) -> int:
    """Bytes from an int or a PostgreSQL-style size ("16MB", "1.5GB", "512kB", "100B", "4096").

    By default units are case-sensitive and fractions are rounded, as Patroni does. The config
    file is more forgiving of case ("16mb") but takes whole numbers only.
    """
    if isinstance(value, bool):
        raise SizeError(f"size must be a number of bytes or a string like '16MB', got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise SizeError(f"size must not be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise SizeError(f"size must be a number of bytes or a string like '16MB', got {value!r}")
    m = _SIZE_RE.match(value)
    if m is None:
        raise SizeError(f"size {value!r} is not a number with an optional unit (B, kB, MB, GB, TB)")
    number, unit = m.groups()
    if not fractions and not number.isdigit():
        raise SizeError(f"size {value!r} must be a whole number of bytes or units")
    hint = next((u for u in SIZE_UNITS if u.lower() == unit.lower()), None)
    if not case_sensitive and hint is not None:
        unit = hint
    if unit and unit not in SIZE_UNITS:
        extra = f" (did you mean {hint!r}? units are case-sensitive)" if hint else ""
        raise SizeError(f"size {value!r} has unknown unit {unit!r}{extra}; use B, kB, MB, GB or TB")
    # Patroni rounds fractional sizes (parse_int), so "4097.5kB" is 4195840 bytes.
    return round(float(number) * SIZE_UNITS[unit or "B"])
