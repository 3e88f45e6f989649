"""The configuration reference (docs/config-reference.md), generated from the schema."""

from __future__ import annotations

from pgvip.config.schema import DEFAULT_CONFIG_PATH, ENV_CONFIG, SCHEMA, SECTIONS, Setting
from pgvip.config.values import show

# -- documentation ---------------------------------------------------------------------


def _doc_default(setting: Setting) -> str:
    if setting.required:
        return "**required**"
    if setting.default is None:
        return "unset"
    return f"`{show(setting.default)}`"


def reference_markdown() -> str:
    """The configuration reference, generated from SCHEMA (for docs/config-reference.md)."""
    lines = [
        "# pgvip configuration reference",
        "",
        "Generated from `pgvip.config.SCHEMA`; do not edit by hand.",
        "",
        f"Sources, strongest first: CLI flags, `PGVIP_<SECTION>_<KEY>` environment variables, "
        f"the TOML file (`--config`, `{ENV_CONFIG}`, or `{DEFAULT_CONFIG_PATH}`), defaults.",
        "In the environment, lists are comma-separated, booleans are true/false, 1/0 or yes/no,",
        "and an empty value unsets an optional key.",
    ]
    for section in SECTIONS:
        lines += [
            "",
            f"## [{section}]",
            "",
            "| key | type | default | env | flag | meaning |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for s in (s for s in SCHEMA if s.section == section):
            kind = s.kind + (f" ({s.unit})" if s.unit else "")
            flag = f"`{s.option}`" if s.option else ""
            text = s.help.replace("|", "\\|") + (" Secret: redacted in status." if s.secret else "")
            lines.append(
                f"| `{s.key}` | {kind} | {_doc_default(s)} | `{s.env}` | {flag} | {text} |"
            )
    return "\n".join(lines) + "\n"
