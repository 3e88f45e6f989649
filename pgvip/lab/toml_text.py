"""A small TOML writer for the flat configs the lab renders: sections of keys whose values are
strings, numbers, bools, paths or lists. Stdlib only, like the rest of pgvip.lab.render.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class TomlValueError(ValueError):
    """A value TOML cannot carry here; the message starts with the key's dotted name."""


def toml_text(doc: Mapping[str, Mapping[str, Any]], *, header: str) -> str:
    """`doc` (section -> key -> value) as TOML text under a one-line `header` comment."""
    lines = [header]
    for name, section in doc.items():
        lines.append("")
        lines.append(f"[{_key(name)}]")
        for key, value in section.items():
            lines.append(f"{_key(key)} = {_value(value, f'{name}.{key}')}")
    return "\n".join(lines) + "\n"


def _key(key: str) -> str:
    if key and all(c.isalnum() or c in "_-" for c in key):
        return key
    return _string(key)


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _value(value: Any, where: str) -> str:
    # bool before int: bool is an int subclass.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TomlValueError(f"{where} must be a finite number, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Path):
        return _string(str(value))
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    raise TomlValueError(
        f"{where} has a value TOML cannot carry here: {value!r} "
        f"({type(value).__name__}); use a string, number, bool or list"
    )
