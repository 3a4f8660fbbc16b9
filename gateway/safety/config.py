"""Configuration of the safety net: triggers, checks, webhook, plans, read-only legacy.

Frozen models like the rest of ``gateway.config``; a trigger is one of several kinds chosen by
its ``kind`` key, so an error names the trigger's index and field
(``safety.triggers.2.threshold: Input should be greater than 0``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gateway import latency
from gateway.datachecks.config import DataChecksConfig
from gateway.fields import FrozenModel, Method

__all__ = [
    "ConsecutiveFailuresTrigger",
    "DataCheckTrigger",
    "DatabaseUnreachableTrigger",
    "ErrorRateTrigger",
    "HealthCheckTrigger",
    "LatencyTrigger",
    "MismatchRateTrigger",
    "PlanDefaults",
    "ReadOnlyConfig",
    "ReadinessConfig",
    "SafetyConfig",
    "SyntheticCheck",
    "SyntheticTrigger",
    "TriggerConfig",
    "WebhookConfig",
]

HOUR = 3600.0


class _Trigger(FrozenModel):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    # Flags this trigger guards; "*" means every declared flag.
    flags: tuple[str, ...] = ("*",)
    # Record and alert what would have happened, change nothing.
    dry_run: bool = False

    @field_validator("flags", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def guards(self, flag: str) -> bool:
        return "*" in self.flags or flag in self.flags


class _WindowTrigger(_Trigger):
    window: float = Field(default=600.0, gt=0, le=86400, description="seconds")
    # Below this many candidate requests in the window the answer is "insufficient data".
    min_requests: int = Field(default=100, ge=1)


class ErrorRateTrigger(_WindowTrigger):
    """Candidate 5xx + connection failures + timeouts, as a fraction of candidate requests."""

    kind: Literal["error_rate"]
    threshold: float = Field(gt=0, le=1, description="fraction, 0.05 = 5%")


class LatencyTrigger(_WindowTrigger):
    """Candidate latency percentile over the window, absolute and/or relative to legacy."""

    kind: Literal["latency"]
    percentile: float = Field(default=95, gt=0, lt=100)
    threshold: float | None = Field(default=None, gt=0, description="seconds")
    # Fire when candidate pXX > relative_to_legacy x legacy pXX over the same window.
    relative_to_legacy: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _needs_a_bound(self) -> LatencyTrigger:
        if self.threshold is None and self.relative_to_legacy is None:
            raise ValueError("a latency trigger needs 'threshold' (seconds) and/or 'relative_to_legacy' (a factor)")
        if self.threshold is not None and self.threshold >= latency.EDGES[-1]:
            # A percentile beyond the last finite edge reads as that edge: such a trigger never fires.
            raise ValueError(
                f"a latency threshold must be below {latency.EDGES[-1]:g} s, the latency histogram's last"
                f" finite edge (a slower percentile reads as {latency.EDGES[-1]:g} s); got {self.threshold:g}"
            )
        return self


class ConsecutiveFailuresTrigger(_Trigger):
    """Connection failures to the candidate in a row, across instances: trips in seconds."""

    kind: Literal["consecutive_failures"]
    threshold: int = Field(default=5, ge=1)


class MismatchRateTrigger(_WindowTrigger):
    """Shadow comparisons that differed, as a fraction of comparisons (fed by the shadow work)."""

    kind: Literal["mismatch_rate"]
    threshold: float = Field(gt=0, le=1)


class _ProbeTrigger(_Trigger):
    interval: float = Field(default=5.0, gt=0, le=3600, description="seconds between probes")
    timeout: float = Field(default=2.0, gt=0, le=60)
    failures: int = Field(default=3, ge=1, description="consecutive failed probes that trip the trigger")


class HealthCheckTrigger(_ProbeTrigger):
    """The candidate's own health endpoint (e.g. /health reporting its database connection)."""

    kind: Literal["health_check"]
    path: str = "/health"
    expect_status: int = Field(default=200, ge=100, le=599)
    # e.g. {database: connected}: a 200 that says the database is gone is still a failure.
    expect_json: dict[str, Any] | None = None


class SyntheticCheck(FrozenModel):
    """One request a critical feature must answer correctly."""

    name: str
    method: Method = "GET"
    path: str
    headers: dict[str, str] = Field(default_factory=dict)
    body: str | None = None
    expect_status: int = Field(default=200, ge=100, le=599)
    # Dotted path into the JSON answer ("data.0.id") and the value it must hold.
    expect_json: dict[str, Any] | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"expected a path starting with '/', got {value!r}")
        return value


class SyntheticTrigger(_ProbeTrigger):
    """A few synthetic requests against the candidate; any failing one means "a critical feature broke"."""

    kind: Literal["synthetic"]
    interval: float = Field(default=30.0, gt=0, le=3600)
    failures: int = Field(default=2, ge=1)
    checks: tuple[SyntheticCheck, ...] = Field(min_length=1)


class _DataTrigger(_Trigger):
    # Data checks this trigger reads (names under safety.data_checks.checks); "*" means all.
    checks: tuple[str, ...] = ("*",)
    runs: int = Field(default=3, ge=1, description="runs in a row a check must fail before the trigger fires")

    @field_validator("checks", mode="before")
    @classmethod
    def _checks(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    def reads(self, check: str) -> bool:
        return "*" in self.checks or check in self.checks


class DataCheckTrigger(_DataTrigger):
    """ "data inconsistency detected": a data check whose result broke its expectation ``runs`` times in a row."""

    kind: Literal["data_check"]


class DatabaseUnreachableTrigger(_DataTrigger):
    """ "database connection failures": a data check that could not reach its database ``runs`` times in a row."""

    kind: Literal["database_unreachable"]


TriggerConfig = Annotated[
    ErrorRateTrigger
    | LatencyTrigger
    | ConsecutiveFailuresTrigger
    | MismatchRateTrigger
    | HealthCheckTrigger
    | SyntheticTrigger
    | DataCheckTrigger
    | DatabaseUnreachableTrigger,
    Field(discriminator="kind"),
]


class WebhookConfig(FrozenModel):
    """Events POSTed as JSON, retried with exponential backoff, from a background worker."""

    url: str
    timeout: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=50)
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    queue_size: int = Field(default=1000, ge=1)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value


class PlanDefaults(FrozenModel):
    """Defaults for ``gateway rollout plan start`` when the operator does not say."""

    steps: tuple[int, ...] = (10, 25, 50, 100)
    soak: float = Field(default=600.0, gt=0, description="seconds per step")
    min_requests: int = Field(default=100, ge=0, description="candidate requests needed during a soak")
    lease_ttl: float = Field(default=5.0, gt=0.5, le=300, description="seconds a driver's lease lasts unrenewed")


class ReadOnlyConfig(FrozenModel):
    """Legacy read-only: writes that would reach legacy are refused, or sent to the candidate."""

    mode: Literal["reject", "candidate"] = "reject"
    retry_after: int = Field(default=300, ge=0, le=86_400 * 365)  # seconds; a year at most


# The readiness report's thresholds (``safety.readiness``) live with the section that holds them:
# gateway.readiness reads the safety stores, so its own package sits above this one.
class ReadinessConfig(FrozenModel):
    """Success criteria of the decommission plan: "100% feature parity validated", error rate
    < 0.1%, API response time improved by > 30%, 48 hours at 100% before legacy goes read-only."""

    # Evidence window for parity, error rate, latency and data checks (the safety store keeps it).
    window: float = Field(default=HOUR, gt=0, le=7 * 24 * HOUR, description="seconds")
    parity: float = Field(default=0.999, gt=0, le=1, description="least fraction of compared requests that match")
    min_comparisons: int = Field(default=1000, ge=1, description="compared requests needed to judge parity")
    error_rate: float = Field(default=0.001, gt=0, le=1, description="candidate error rate must be below this")
    min_requests: int = Field(default=1000, ge=1, description="candidate requests needed to judge errors, latency")
    p95_improvement: float = Field(default=0.30, ge=-10, lt=1, description="candidate p95 at most (1 - x) x legacy")
    # Time at the current percentage without a rollback before it may be raised.
    step_soak: float = Field(default=HOUR, ge=0, description="seconds")
    # Time at 100% without a rollback before legacy may go read-only (the team's 48 hours).
    full_soak: float = Field(default=48 * HOUR, ge=0, description="seconds")
    # Time legacy has been read-only (at 100%, nothing rolled back) before it may be decommissioned.
    read_only_soak: float = Field(default=48 * HOUR, ge=0, description="seconds")


class SafetyConfig(FrozenModel):
    enabled: bool = True
    # Width of one time bucket of the shared window counters.
    bucket_seconds: int = Field(default=1, ge=1, le=60)
    flush_interval: float = Field(default=1.0, gt=0, le=30)
    evaluate_interval: float = Field(default=1.0, gt=0, le=60)
    # A YAML file with a top-level 'triggers:' list (default: the team's plan in rules/); the
    # path is relative to the config file. Inline 'triggers' are added after the file's.
    rules_file: str | None = None
    triggers: tuple[TriggerConfig, ...] = ()
    webhook: WebhookConfig | None = None
    plans: PlanDefaults = PlanDefaults()
    # Flag name -> read-only legacy behaviour for requests that flag routes.
    legacy_read_only: dict[str, ReadOnlyConfig] = Field(default_factory=dict)
    # SQL integrity checks against the databases (gateway.datachecks), and the readiness report.
    data_checks: DataChecksConfig = DataChecksConfig()
    readiness: ReadinessConfig = ReadinessConfig()

    @model_validator(mode="after")
    def _unique_names(self) -> SafetyConfig:
        seen: set[str] = set()
        for index, trigger in enumerate(self.triggers):
            if trigger.name in seen:
                raise ValueError(f"triggers.{index}.name: duplicate trigger name {trigger.name!r}")
            seen.add(trigger.name)
        return self

    @model_validator(mode="after")
    def _data_triggers_name_checks(self) -> SafetyConfig:
        names = {check.name for check in self.data_checks.checks}
        for index, trigger in enumerate(self.triggers):
            if isinstance(trigger, _DataTrigger):
                unknown = sorted(set(trigger.checks) - names - {"*"})
                if unknown or not names:
                    raise ValueError(
                        f"triggers.{index}.checks: unknown data check(s) {unknown or list(trigger.checks)} "
                        f"(declared under data_checks.checks: {sorted(names)})"
                    )
        return self

    @property
    def longest_window(self) -> float:
        # The readiness report reads its window from the same shared counters: keep that much.
        triggers = (t.window for t in self.triggers if isinstance(t, _WindowTrigger))
        return max(self.readiness.window, max(triggers, default=60.0))
