"""The documentation cannot drift from the code: the config reference is the schema's own
output, every key, env variable, TOML example and `pgvip` command the docs mention exists,
and every relative link (and #anchor) in docs/*.md and README.md resolves."""

from __future__ import annotations

import re
import shlex
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from pgvip.cli import main as cli_main
from pgvip.config import (
    ENV_NAMES,
    ENV_NOT_SETTINGS,
    SCHEMA,
    SECTIONS,
    SETTINGS,
    ConfigError,
    config_from_mapping,
    load_config,
    reference_markdown,
)

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
REFERENCE = DOCS / "config-reference.md"
GUIDE = DOCS / "deployment.md"
DOC_FILES = sorted(DOCS.glob("*.md")) + [REPO / "README.md"]

# A fenced block, also indented inside a list item: (indent, fence, info, body).
FENCE = re.compile(r"^([ \t]*)(```|~~~)([^\n`]*)\n(.*?)^\1\2[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"(?<!\!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$", re.MULTILINE)
FILE_SUFFIXES = {"py", "md", "toml", "yaml", "yml", "json", "sh", "nft", "conf", "service"}
SECTION_PREFIXES = tuple(f"PGVIP_{s.upper()}_" for s in SECTIONS)
SHELL_STOP = {"|", "||", "&&", ";", "&", ">", ">>", "2>&1", "<", "<<", "--"}


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _fenced_blocks(text: str) -> Iterator[tuple[str, str]]:
    """(info string, body) of every fenced code block."""
    for m in FENCE.finditer(text):
        yield m.group(3).strip().lower(), textwrap.dedent(m.group(4))


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code: where links are links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: text of links and code kept, punctuation dropped."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for m in HEADING.finditer(FENCE.sub("", _read(path))):
        base = _slug(m.group(2))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def _links(path: Path) -> list[str]:
    prose = _prose(_read(path))
    found = [m.group(1) for m in LINK.finditer(prose)]
    found += [m.group(1) for m in IMAGE.finditer(prose)]
    found += [m.group(1) for m in REF_LINK.finditer(prose)]
    return found


# -- the generated reference ------------------------------------------------------------


def test_config_reference_is_generated_from_the_schema() -> None:
    assert REFERENCE.exists(), "docs/config-reference.md is missing"
    assert _read(REFERENCE) == reference_markdown(), (
        "docs/config-reference.md is out of date with pgvip.config.SCHEMA; "
        "run: python scripts/gen-config-reference.py"
    )


def test_every_schema_key_is_documented() -> None:
    rows: set[str] = set()
    section = None
    for line in _read(REFERENCE).splitlines():
        head = re.match(r"^## \[(\w+)\]$", line)
        if head:
            section = head.group(1)
            continue
        row = re.match(r"^\| `(\w+)` \|", line)
        if row and section is not None:
            rows.add(f"{section}.{row.group(1)}")
    guide = _read(GUIDE)
    missing = [s.name for s in SCHEMA if s.name not in rows and f"`{s.name}`" not in guide]
    assert not missing, f"keys documented nowhere: {missing}"
    # Every row of the reference is a real key under its own section.
    assert rows <= set(SETTINGS), f"reference rows that are not keys: {rows - set(SETTINGS)}"


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_dotted_keys_in_docs_exist(path: Path) -> None:
    """`rw.vip`-style names in the docs must be real keys (a rename must update the docs)."""
    wrong = []
    for m in re.finditer(r"`([a-z_]+)\.([a-z_]+)(?:\s*=[^`]*)?`", _read(path)):
        section, key = m.group(1), m.group(2)
        if key in FILE_SUFFIXES:
            continue  # `announce.py` is a module, not the announce section
        if section in SECTIONS and f"{section}.{key}" not in SETTINGS:
            wrong.append(m.group(0))
    assert not wrong, f"{_rel(path)} names keys that do not exist: {wrong}"


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_env_variables_in_docs_exist(path: Path) -> None:
    # Only names that look like settings (PGVIP_<SECTION>_...): PGVIP_IFA_PROTO is a constant.
    names = set(re.findall(r"\bPGVIP_[A-Z0-9_]*[A-Z0-9]\b", _read(path)))
    settings_like = {n for n in names if n.startswith(SECTION_PREFIXES)}
    wrong = sorted(n for n in settings_like if n not in ENV_NAMES and n not in ENV_NOT_SETTINGS)
    assert not wrong, f"{_rel(path)} names environment variables pgvip does not read: {wrong}"


def _problems_beyond_required(data: dict[str, object]) -> list[str]:
    """Errors and warnings of a config fragment, except "X is required" (fragments may omit)."""
    try:
        config = config_from_mapping(data, source="example")
    except ConfigError as exc:
        return [
            str(p)
            for p in exc.problems
            if not (p.key and p.message.startswith(f"{p.key} is required:"))
        ]
    return [str(w) for w in config.warnings]


def test_toml_examples_in_docs_are_valid_configs() -> None:
    checked = 0
    for path in DOC_FILES:
        for lang, body in _fenced_blocks(_read(path)):
            if lang != "toml":
                continue
            try:
                data = tomllib.loads(body)
            except tomllib.TOMLDecodeError as exc:
                pytest.fail(f"{_rel(path)}: a TOML example does not parse: {exc}\n{body}")
            problems = _problems_beyond_required(data)
            assert not problems, f"{_rel(path)}: a TOML example is not a valid config:\n" + (
                "\n".join(problems)
            )
            checked += 1
    assert checked >= 3, "the guide and the migration page should carry TOML examples"


def test_deploy_example_config_is_valid_without_warnings() -> None:
    config = load_config(REPO / "deploy" / "pgvip.toml", {}, {})
    assert config.warnings == ()


def test_problem_filter_still_reports_bad_values() -> None:
    # The TOML check above ignores only "required"; an unknown key or a bad value must show.
    assert _problems_beyond_required({"rw": {"vrid": 50}}) == []
    found = _problems_beyond_required({"rw": {"vrid": 300}, "patroni": {"fal": 3}})
    assert any("rw.vrid = 300" in p for p in found)
    assert any("unknown key patroni.fal" in p for p in found)


# -- links --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in _links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):
            continue  # http:, https:, mailto:
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no {dest})")
            continue
        if anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading #{anchor} in {dest.name})")
    assert not broken, f"{_rel(path)} has broken links: {broken}"


def test_guide_links_the_other_docs() -> None:
    targets = {t.partition("#")[0] for t in _links(GUIDE)}
    for doc in (
        "config-reference.md",
        "troubleshooting.md",
        "migrating-from-keepalived.md",
        "architecture.md",
    ):
        assert doc in targets, f"docs/deployment.md does not link {doc}"


def test_link_checker_catches_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# Real heading\n")
    page.write_text(
        "# Top\n[ok](there.md#real-heading) [bad](missing.md) [anchor](there.md#nope)\n"
        "`[not a link](nowhere.md)`\n```\n[in code](nowhere.md)\n```\n[self](#top)\n"
    )
    assert _links(page) == ["there.md#real-heading", "missing.md", "there.md#nope", "#top"]
    assert _anchors(tmp_path / "there.md") == {"real-heading"}
    assert _slug("7. Start and verify") == "7-start-and-verify"
    assert _slug("`failsafe_mode`") == "failsafe_mode"


# -- commands -----------------------------------------------------------------------------


def _command_lines(text: str) -> Iterator[str]:
    """Shell command lines of fenced sh/bash/console blocks, without prompts and comments."""
    for lang, body in _fenced_blocks(text):
        if lang in ("sh", "bash", "shell"):
            for line in body.splitlines():
                line = re.sub(r"^\s*#.*$", "", line)  # a comment line
                yield re.sub(r"\s+#\s.*$", "", line)
        elif lang == "console":
            for line in body.splitlines():
                m = re.match(r"^[$#] (.*)$", line)  # only prompted lines are commands
                if m:
                    yield re.sub(r"\s+#\s.*$", "", m.group(1))


def _tokens(rest: str) -> list[str]:
    try:
        return shlex.split(rest)
    except ValueError:
        return rest.split()


def _check_invocation(tokens: list[str]) -> str | None:
    """None if `pgvip <tokens>` names a real command and real long options, else why not."""
    if not tokens or not re.match(r"^[a-z][a-z-]*$", tokens[0]):
        return None  # `pgvip` as a word (a user, a unit name, a path), not a command
    cmd: click.Command = cli_main
    words: list[str] = []
    i = 0
    # A placeholder (`pgvip lab …`, `pgvip lab exec NODE`) ends the walk without an error.
    while (
        isinstance(cmd, click.Group) and i < len(tokens) and re.match(r"^[a-z][a-z-]*$", tokens[i])
    ):
        # get_command, not .commands: `lab` is attached lazily (pgvip/lazy_group.py).
        sub = cmd.get_command(click.Context(cmd), tokens[i])
        if sub is None:
            return f"no command `pgvip {' '.join([*words, tokens[i]])}`"
        words.append(tokens[i])
        cmd = sub
        i += 1
    known = {"--help"}
    for param in cmd.params:
        known.update(o for o in (*param.opts, *param.secondary_opts) if o.startswith("--"))
    for token in tokens[i:]:
        if token in SHELL_STOP or token.startswith((">", "2>", "#", "$(", "|")):
            break
        if token.startswith("--") and token.partition("=")[0] not in known:
            return f"`pgvip {' '.join(words)}` has no option {token.partition('=')[0]}"
    return None


def _invocations(text: str) -> Iterator[str]:
    """The argument text of every `pgvip ...` invocation: in shell blocks (one per command of
    a `a && b; c | d` line) and in inline code that starts with `pgvip `."""
    lines = list(_command_lines(text))
    lines += [m.group(1) for m in re.finditer(r"`(pgvip [^`\n]+)`", FENCE.sub("", text))]
    for line in lines:
        for part in re.split(r"\s(?:&&|\|\||;|\|)\s|;$", line):
            m = re.search(r"(?:^|[\s(/])pgvip[ \t]+(\S.*)$", part)
            if m:
                yield m.group(1).strip()


@pytest.mark.parametrize("path", DOC_FILES, ids=_rel)
def test_pgvip_commands_in_docs_exist(path: Path) -> None:
    wrong = []
    for rest in _invocations(_read(path)):
        why = _check_invocation(_tokens(rest))
        if why:
            wrong.append(f"{why} (in `pgvip {rest}`)")
    assert not wrong, f"{_rel(path)}: " + "; ".join(wrong)


def test_invocations_are_found_in_blocks_and_inline_code() -> None:
    text = (
        "Run `pgvip status --json` or `pgvip`.\n"
        "```sh\nsudo pgvip lab up && sudo pgvip lab demo   # pgvip nothing here\n"
        "useradd --system pgvip\n```\n"
        "```console\n$ pgvip check-config\npgvip: configuration OK\n# pgvip release\n```\n"
        "```\npgvip reload\n```\n"
        "- item\n\n  ```console\n  # pgvip lab status\n  ```\n"
    )
    assert sorted(_invocations(text)) == [
        "check-config",
        "lab demo",
        "lab status",
        "lab up",
        "release",
        "status --json",
    ]


def test_command_checker_rejects_what_does_not_exist() -> None:
    assert _check_invocation(["status", "--json", "--transitions", "3"]) is None
    assert _check_invocation(["lab", "up", "--prefix", "x", "--subnet", "10.0.0.0/24"]) is None
    assert _check_invocation(["release", "--interface", "eth0", "|", "grep", "--bogus"]) is None
    assert _check_invocation(["/etc/pgvip"]) is None
    assert _check_invocation(["lab", "…"]) is None
    assert _check_invocation(["reload"]) == "no command `pgvip reload`"
    assert _check_invocation(["lab", "nuke"]) == "no command `pgvip lab nuke`"
    assert _check_invocation(["status", "--verbose"]) == "`pgvip status` has no option --verbose"
