"""What can be wrong with a configuration: each problem names the key, its source and value."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


# -- problems -----------------------------------------------------------------


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with the configuration, with enough context to fix it."""

    key: str  # "rw.vrid"; "" when the problem is not about one key (syntax error, unknown env)
    source: str  # "/etc/pgvip/pgvip.toml", "env PGVIP_RW_VRID", "--rw-vrid", "default" or ""
    value: str | None  # the offending value as written (TOML syntax); None if not applicable
    message: str
    suggestion: str | None = None  # shown as "(did you mean X?)"
    severity: Severity = "error"

    def __str__(self) -> str:
        head = f"{self.source}: " if self.source else ""
        body = self.message if self.value is None else f"{self.key} = {self.value}: {self.message}"
        tail = f" (did you mean {self.suggestion}?)" if self.suggestion else ""
        return f"{head}{body}{tail}"


class ConfigError(Exception):
    """The configuration is unusable; `problems` lists every error (and warning) found."""

    def __init__(self, problems: Iterable[ConfigProblem]) -> None:
        ordered = sorted(problems, key=lambda p: p.severity != "error")
        self.problems: list[ConfigProblem] = ordered
        super().__init__(str(self))

    @property
    def errors(self) -> list[ConfigProblem]:
        return [p for p in self.problems if p.severity == "error"]

    def __str__(self) -> str:
        return "\n".join(
            str(p) if p.severity == "error" else f"warning: {p}" for p in self.problems
        )


class Invalid(Exception):
    def __init__(self, message: str, suggestion: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.suggestion = suggestion
