"""``file:line: what is wrong`` — how every configuration error is reported.

eventscope.toml (:mod:`.rules`) and the AsyncAPI documents it names
(:mod:`eventscope.tracer.contracts.asyncapi`) report their problems the same way: every
issue at once, in file and line order, each with a hint where one helps. Nothing starts
half-configured.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConfigError", "ConfigIssue"]


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}" + (f" (hint: {self.hint})" if self.hint else "")


class ConfigError(ValueError):
    """The configuration is invalid; ``issues`` lists every problem, in file and line order."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.file, i.line or 0, i.message))
        super().__init__("\n".join(str(issue) for issue in self.issues))
