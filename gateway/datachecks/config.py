"""Configuration of data checks (``safety.data_checks``). Pure; no I/O.

A check names the environment variable that holds its DSN (``dsn_env``), never the DSN itself:
configuration files are shown, diffed and committed; secrets are not.

    safety:
      data_checks:
        interval: 60
        checks:
          - name: enrollments-without-student
            dsn_env: CANDIDATE_DB_DSN
            query: SELECT count(*) FROM enrollments e LEFT JOIN students s ON ... WHERE s.id IS NULL
            expect: "= 0"                     # or "<= 5"
          - name: students-same-count
            dsn_env: CANDIDATE_DB_DSN
            query: SELECT count(*) FROM students
            equal_to: {dsn_env: LEGACY_DB_DSN, query: SELECT count(*) FROM students}
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.fields import FrozenModel

__all__ = ["DataCheck", "DataChecksConfig", "Expectation", "QueryRef", "parse_expectation"]

_ENV_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_EXPECT_RE = re.compile(r"^\s*(=|==|<=|≤)\s*(-?\d+(?:\.\d+)?)\s*$")


class Expectation(FrozenModel):
    """``value <op> bound``: the only comparisons a data check needs."""

    op: Literal["=", "<="]
    bound: float

    def holds(self, value: float) -> bool:
        return value == self.bound if self.op == "=" else value <= self.bound

    def __str__(self) -> str:
        return f"{self.op} {self.bound:g}"


def parse_expectation(text: str) -> Expectation:
    match = _EXPECT_RE.match(text)
    if match is None:
        raise ValueError(f"expected '= N' or '<= N' (N a number), got {text!r}")
    op: Literal["=", "<="] = "<=" if match.group(1) in ("<=", "≤") else "="
    return Expectation(op=op, bound=float(match.group(2)))


class QueryRef(FrozenModel):
    """A query on a database named by the environment variable holding its DSN."""

    dsn_env: str
    query: str = Field(min_length=1, max_length=20_000)

    @field_validator("dsn_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_RE.match(value):
            raise ValueError(
                f"expected the NAME of an environment variable holding the DSN (e.g. LEGACY_DB_DSN), got {value!r};"
                " never write a DSN in the config"
            )
        return value


class DataCheck(QueryRef):
    """One integrity check: a query returning one number, and what that number must be."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    expect: Expectation | None = None
    # Legacy vs candidate: the value must equal this other query's result (e.g. row counts).
    equal_to: QueryRef | None = None

    @field_validator("expect", mode="before")
    @classmethod
    def _expect(cls, value: object) -> object:
        return parse_expectation(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_expectation(self) -> DataCheck:
        if (self.expect is None) == (self.equal_to is None):
            raise ValueError("a data check needs exactly one of 'expect' (\"= 0\", \"<= N\") or 'equal_to'")
        return self

    @property
    def expectation(self) -> str:
        if self.expect is not None:
            return str(self.expect)
        assert self.equal_to is not None
        return f"equal to {self.equal_to.dsn_env}: {self.equal_to.query}"


class DataChecksConfig(FrozenModel):
    # Seconds between runs (by the one instance holding the lease).
    interval: float = Field(default=60.0, gt=0, le=86400)
    statement_timeout: float = Field(default=10.0, gt=0, le=3600, description="seconds, per query")
    connect_timeout: float = Field(default=5.0, gt=0, le=120)
    # A YAML file with a top-level 'data_checks: checks:' list (and optionally 'safety: triggers:'),
    # relative to the config file; inline checks are added after the file's.
    rules_file: str | None = None
    checks: tuple[DataCheck, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> DataChecksConfig:
        seen: set[str] = set()
        for index, check in enumerate(self.checks):
            if check.name in seen:
                raise ValueError(f"checks.{index}.name: duplicate data check name {check.name!r}")
            seen.add(check.name)
        return self

    @property
    def lease_ttl(self) -> float:
        """Long enough to cover a whole run, renewed on every run."""
        return self.interval + 2 * (self.connect_timeout + self.statement_timeout) + 1.0
