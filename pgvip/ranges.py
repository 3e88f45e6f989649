"""The one integer range check the pure core and the dataplane share (stdlib only).

`bool` is an `int` in Python, so `True` would pass a plain `low <= value <= high`; every
caller wants it refused, with the offending value in the message.
"""

from __future__ import annotations


def is_int_in(value: object, low: int, high: int) -> bool:
    """True for an int (not a bool) in low..high."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def require_int(
    name: str,
    value: object,
    low: int,
    high: int,
    *,
    hint: str = "",
    error: type[Exception] = ValueError,
) -> None:
    """Raise `error("<name> must be an integer in <low>..<high><hint>, got <value>")`."""
    if not is_int_in(value, low, high):
        raise error(f"{name} must be an integer in {low}..{high}{hint}, got {value!r}")
