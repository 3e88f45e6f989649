"""Reading raw values from the TOML file, `PGVIP_*` env and CLI flags, and converting
each to its schema type."""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pgvip.config.problems import ConfigProblem, Invalid
from pgvip.config.schema import (
    ENV_NAMES,
    ENV_NOT_SETTINGS,
    ENV_PREFIX,
    FLAG_KEYS,
    SCHEMA,
    SECTIONS,
    SETTINGS,
    Kind,
    Setting,
)

# -- reading values ------------------------------------------------------------------


@dataclass(frozen=True)
class Given:
    raw: Any
    source: str
    textual: bool  # a string from env or a flag, to be parsed per kind

    def show(self) -> str:
        return show(self.raw)


def show(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, str):
        return json.dumps(raw, ensure_ascii=False)
    if isinstance(raw, list | tuple):
        return "[" + ", ".join(show(v) for v in raw) + "]"
    if isinstance(raw, dict):
        return "{...}"
    return str(raw)


_TYPE_WORDS: dict[str, str] = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "list": "a list of strings",
    "size": "a byte count or a size like 16MB",
}
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
_INT_TEXT = re.compile(r"^\s*[+-]?\d+\s*$")


def _got(raw: Any) -> str:
    return repr(raw) if isinstance(raw, str) else show(raw)


def _wrong_type(kind: Kind, raw: Any) -> Invalid:
    return Invalid(f"expected {_TYPE_WORDS[kind]}, got {_got(raw)}")


def _parse_text(kind: Kind, text: str) -> Any:
    if kind == "string":
        return text
    if kind == "integer":
        if not _INT_TEXT.match(text):
            raise Invalid(f"expected an integer, got {text!r}")
        return int(text)
    if kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise Invalid(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise Invalid(f"expected a finite number, got {text!r}")
        return value
    if kind == "boolean":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise Invalid(f"expected true/false, 1/0 or yes/no, got {text!r}")
    if kind == "list":
        return [item.strip() for item in text.split(",") if item.strip()]
    # size: digits are bytes, anything else goes to the unit parser
    return int(text) if _INT_TEXT.match(text) else text


def parse_typed(kind: Kind, raw: Any) -> Any:
    if kind == "string":
        if not isinstance(raw, str):
            raise _wrong_type(kind, raw)
        return raw
    if kind == "integer":
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _wrong_type(kind, raw)
        return raw
    if kind == "number":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise _wrong_type(kind, raw)
        if not math.isfinite(raw):
            raise Invalid(f"expected a finite number, got {_got(raw)}")
        return raw
    if kind == "boolean":
        if not isinstance(raw, bool):
            raise _wrong_type(kind, raw)
        return raw
    if kind == "list":
        if not isinstance(raw, list | tuple) or not all(isinstance(v, str) for v in raw):
            raise _wrong_type(kind, raw)
        return list(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise _wrong_type(kind, raw)
    return raw


def convert(setting: Setting, given: Given) -> Any:
    if given.textual and given.raw == "" and (setting.default is None or setting.kind == "list"):
        return None if setting.default is None else ()
    raw = (
        _parse_text(setting.kind, given.raw)
        if given.textual
        else parse_typed(setting.kind, given.raw)
    )
    return setting.check(raw) if setting.check else (tuple(raw) if isinstance(raw, list) else raw)


def _suggest_key(section: str, key: str) -> str | None:
    own = [s.key for s in SCHEMA if s.section == section]
    close = difflib.get_close_matches(key, own, n=1, cutoff=0.6)
    if close:
        return f"{section}.{close[0]}"
    elsewhere = [s.name for s in SCHEMA if s.key == key]
    if elsewhere:
        return elsewhere[0]
    close = difflib.get_close_matches(f"{section}.{key}", list(SETTINGS), n=1, cutoff=0.75)
    return close[0] if close else None


def file_values(
    data: Mapping[str, Any], source: str, problems: list[ConfigProblem]
) -> dict[str, Given]:
    given: dict[str, Given] = {}
    for section, table in data.items():
        if section not in SECTIONS:
            if isinstance(table, dict):
                close = difflib.get_close_matches(section, SECTIONS, n=1, cutoff=0.6)
                hint = f"[{close[0]}]" if close else None
                problems.append(
                    ConfigProblem(section, source, None, f"unknown section [{section}]", hint)
                )
            else:
                # A key outside any section: "url = ..." above the first [table].
                elsewhere = [s.name for s in SCHEMA if s.key == section]
                msg = f"unknown key {section} (every key belongs in a [section])"
                hint = elsewhere[0] if elsewhere else None
                problems.append(ConfigProblem(section, source, None, msg, hint))
            continue
        if not isinstance(table, dict):
            msg = f"[{section}] must be a table, got {show(table)}"
            problems.append(ConfigProblem(section, source, None, msg))
            continue
        for key, raw in table.items():
            name = f"{section}.{key}"
            if name in SETTINGS:
                given[name] = Given(raw, source, textual=False)
            else:
                hint = _suggest_key(section, key)
                problems.append(ConfigProblem(name, source, None, f"unknown key {name}", hint))
    return given


def env_values(env: Mapping[str, str], problems: list[ConfigProblem]) -> dict[str, Given]:
    given: dict[str, Given] = {}
    for name, raw in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_NOT_SETTINGS:
            continue
        setting = ENV_NAMES.get(name)
        if setting is None:
            close = difflib.get_close_matches(name, list(ENV_NAMES), n=1, cutoff=0.75)
            msg = f"unknown environment variable {name}, ignored"
            hint = close[0] if close else None
            problems.append(ConfigProblem("", f"env {name}", None, msg, hint, "warning"))
            continue
        given[setting.name] = Given(raw, f"env {name}", textual=True)
    return given


def flag_values(flags: Mapping[str, object], problems: list[ConfigProblem]) -> dict[str, Given]:
    given: dict[str, Given] = {}
    for flag, raw in flags.items():
        if raw is None:  # click passes None for an option that was not given
            continue
        name = FLAG_KEYS.get(flag)
        if name is None:
            close = difflib.get_close_matches(flag, list(FLAG_KEYS), n=1, cutoff=0.6)
            msg = f"unknown flag {flag!r} (known: {', '.join(FLAG_KEYS)})"
            hint = close[0] if close else None
            problems.append(ConfigProblem("", f"--{flag.replace('_', '-')}", None, msg, hint))
            continue
        option = SETTINGS[name].option or flag
        given[name] = Given(raw, option, textual=isinstance(raw, str))
    return given
