"""Tests for pgvip.lab.toml_text, the lab's small TOML writer: what it writes parses back."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pgvip.lab.toml_text import TomlValueError, toml_text


def test_sections_and_values_parse_back() -> None:
    doc: dict[str, dict[str, Any]] = {
        "vrrp": {"interface": "eth0", "advert_int": 20, "preempt": True, "delay": 0.5},
        "odd section": {"key with space": 'q"uote\\back\nline\ttab\x01', "path": Path("/run/x")},
        "lists": {"hosts": ["a", "b"], "empty": []},
    }
    text = toml_text(doc, header="# a header")
    assert text.startswith("# a header\n\n[vrrp]\n")
    parsed = tomllib.loads(text)
    assert parsed["vrrp"] == doc["vrrp"]
    assert parsed["odd section"] == {
        "key with space": 'q"uote\\back\nline\ttab\x01',
        "path": "/run/x",
    }
    assert parsed["lists"] == {"hosts": ["a", "b"], "empty": []}


def test_bool_is_not_written_as_an_int() -> None:
    assert tomllib.loads(toml_text({"s": {"b": False}}, header="#"))["s"]["b"] is False


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (math.inf, "s.k must be a finite number"),
        ([1.0, math.nan], "s.k must be a finite number"),
        ({"nested": 1}, "s.k has a value TOML cannot carry here"),
        (None, "s.k has a value TOML cannot carry here"),
    ],
)
def test_values_toml_cannot_carry_name_their_key(value: object, message: str) -> None:
    with pytest.raises(TomlValueError, match=message):
        toml_text({"s": {"k": value}}, header="#")
