"""Running data checks: one instance at a time (a lease in the safety store), each query in a
read-only transaction with a statement timeout, on PostgreSQL through asyncpg.

DSNs are read from the environment at each run and never leave this module: not in logs, not
in results, not in errors (``redact`` scrubs any message that might echo one). A query that
tries to write fails: the session defaults to read-only transactions and the query runs inside
a ``READ ONLY`` transaction, so PostgreSQL itself refuses it. asyncpg sends the query as one
prepared statement, so it cannot smuggle a second statement (``SET TRANSACTION READ WRITE; ...``).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import asyncpg
import structlog
from typing_extensions import TypedDict

from gateway.datachecks.config import DataCheck, DataChecksConfig, QueryRef
from gateway.datachecks.results import CheckState, Outcome, advance, decode, encode
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics

__all__ = [
    "DataChecks",
    "DataChecksView",
    "DocumentStore",
    "QueryFailed",
    "Unreachable",
    "fetch_number",
    "redact",
    "run_check",
]

log = structlog.get_logger("gateway.datachecks")
LEASE = "datachecks"
DOCUMENT = "datachecks"
_PASSWORD_RE = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)
_URL_RE = re.compile(r"postgres(?:ql)?://\S+", re.IGNORECASE)
# asyncpg's own errors that mean "no usable connection", as opposed to "the query failed".
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InvalidCatalogNameError,  # the database does not exist (dropped)
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


class Unreachable(Exception):
    """The database could not be reached or the connection broke."""


class QueryFailed(Exception):
    """The database answered, the query did not give one number."""


def redact(message: str, secrets: list[str]) -> str:
    """Scrub DSNs and passwords from ``message`` (an error text that might echo them)."""
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        message = message.replace(secret, "***")
    message = _URL_RE.sub("postgresql://***", message)
    return _PASSWORD_RE.sub(r"\1***", message)[:300]


def _secrets(dsn: str) -> list[str]:
    found = [dsn]
    try:
        password = urlsplit(dsn).password
    except ValueError:
        password = None
    if password:
        found += [password, unquote(password)]
    found += [m.group(2) for m in _PASSWORD_RE.finditer(dsn)]
    return found


async def fetch_number(dsn: str, query: str, config: DataChecksConfig) -> float:
    """The single number ``query`` returns, read in a read-only transaction; raises ``Unreachable``
    or ``QueryFailed`` with messages free of the DSN."""
    timeout_ms = int(config.statement_timeout * 1000)
    secrets = _secrets(dsn)
    try:
        conn = await asyncpg.connect(
            dsn,
            timeout=config.connect_timeout,
            command_timeout=config.statement_timeout + config.connect_timeout,
            server_settings={
                "application_name": "cutover-datachecks",
                "default_transaction_read_only": "on",
                "statement_timeout": str(timeout_ms),
            },
        )
    except TimeoutError as exc:
        raise Unreachable(f"no connection within {config.connect_timeout:g}s") from exc
    except _CONNECTION_ERRORS as exc:
        raise Unreachable(redact(f"{type(exc).__name__}: {exc}", secrets)) from exc
    except (asyncpg.PostgresError, ValueError) as exc:  # e.g. a malformed DSN
        raise Unreachable(redact(f"{type(exc).__name__}: {exc}", secrets)) from exc
    try:
        async with conn.transaction(readonly=True):
            value = await conn.fetchval(query)
    except asyncpg.ReadOnlySQLTransactionError as exc:
        raise QueryFailed(f"refused: the query tries to write in a read-only transaction ({exc})") from exc
    except asyncpg.QueryCanceledError as exc:
        raise QueryFailed(f"cancelled after the statement timeout ({config.statement_timeout:g}s)") from exc
    except TimeoutError as exc:
        raise QueryFailed(f"no answer within {config.statement_timeout + config.connect_timeout:g}s") from exc
    except _CONNECTION_ERRORS as exc:
        raise Unreachable(redact(f"{type(exc).__name__}: {exc}", secrets)) from exc
    except asyncpg.PostgresError as exc:
        raise QueryFailed(redact(f"{type(exc).__name__}: {exc}", secrets)) from exc
    finally:
        try:
            await asyncio.wait_for(conn.close(), config.connect_timeout)
        except Exception:  # noqa: BLE001 - closing a broken connection: nothing left to do
            conn.terminate()
    if isinstance(value, bool) or not (isinstance(value, (int, float)) or hasattr(value, "__float__")):
        raise QueryFailed(f"expected the query to return one number, got {type(value).__name__}")
    return float(value)


async def _value(ref: QueryRef, env: Mapping[str, str], config: DataChecksConfig) -> float:
    dsn = env.get(ref.dsn_env)
    if not dsn:
        raise QueryFailed(f"environment variable {ref.dsn_env} (the DSN) is not set")
    return await fetch_number(dsn, ref.query, config)


async def run_check(check: DataCheck, env: Mapping[str, str], config: DataChecksConfig) -> Outcome:
    """Run one check (both queries for ``equal_to``) and judge it."""
    start = time.monotonic()
    try:
        value = await _value(check, env, config)
        if check.equal_to is not None:
            other = await _value(check.equal_to, env, config)
            ok = value == other
            detail = f"{value:g} vs {other:g} on {check.equal_to.dsn_env}"
        else:
            assert check.expect is not None
            ok = check.expect.holds(value)
            detail = f"{value:g}, expected {check.expect}"
    except Unreachable as exc:
        return Outcome("unreachable", detail=f"database unreachable: {exc}", seconds=time.monotonic() - start)
    except QueryFailed as exc:
        return Outcome("error", detail=str(exc), seconds=time.monotonic() - start)
    except Exception as exc:  # noqa: BLE001 - anything else the driver raises: a broken check, DSN scrubbed
        refs = [check, *((check.equal_to,) if check.equal_to is not None else ())]
        secrets = [secret for ref in refs for secret in _secrets(env.get(ref.dsn_env) or "")]
        detail = redact(f"{type(exc).__name__}: {exc}", secrets)
        return Outcome("error", detail=detail, seconds=time.monotonic() - start)
    return Outcome("ok" if ok else "failing", value, detail, time.monotonic() - start)


class DocumentStore(Protocol):
    """The part of the shared store the checks use (``gateway.safety.store.SafetyStore`` has it):
    a lease so one instance runs the checks, and the results document every instance reads."""

    async def lease(self, name: str, owner: str, ttl: float) -> bool: ...

    async def put_document(self, name: str, value: bytes, ttl: float) -> None: ...

    async def document(self, name: str) -> bytes | None: ...


class DataChecksView(TypedDict):
    """The latest results as the admin API and the status page show them (``None``: not run yet)."""

    intervalSeconds: float | None
    runner: str | None
    checkedAt: float | None
    checks: list[dict[str, Any]]


class DataChecks:
    """The data checks of one gateway: ``run`` (under the lease) and ``refresh`` (every instance)."""

    def __init__(
        self,
        config: DataChecksConfig,
        store: DocumentStore,
        metrics: Metrics,
        instance: str,
        clock: Callable[[], float] = time.time,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.instance = instance
        self.clock = clock
        self.env = os.environ if env is None else env
        self.states: dict[str, CheckState] = {
            c.name: CheckState(c.name, c.expectation, c.description) for c in config.checks
        }
        self.runner: str | None = None  # the instance whose results these are
        self.checked_at: float | None = None
        for check in config.checks:
            self._export(self.states[check.name])

    def __bool__(self) -> bool:
        return bool(self.config.checks)

    async def run(self, stopping: asyncio.Event) -> None:
        """Forever: every ``interval``, run the checks if this instance holds the lease."""
        while not stopping.is_set():
            try:
                await self.run_once()
            except StoreUnavailable as exc:
                log.warning("data_checks_paused", reason=f"safety store unavailable: {exc}")
            except Exception:  # a bug must not stop the checks for good: log, try again next time
                log.exception("data_checks_error")
            try:
                await asyncio.wait_for(stopping.wait(), self.config.interval)
            except TimeoutError:
                pass

    async def run_once(self) -> bool:
        """Run every check once if the lease is ours; False if another instance runs them."""
        if not await self.store.lease(LEASE, self.instance, self.config.lease_ttl):
            return False
        await self.refresh()  # carry on the counts of whichever instance ran them before
        outcomes = await asyncio.gather(*(run_check(c, self.env, self.config) for c in self.config.checks))
        at = self.clock()
        for check, outcome in zip(self.config.checks, outcomes, strict=True):
            previous = self.states[check.name]
            state = advance(replace_expected(previous, check), outcome, at)
            self.states[check.name] = state
            self.metrics.data_check_runs.labels(check.name, outcome.status).inc()
            if outcome.status != previous.status:
                emit = log.info if outcome.status == "ok" else log.warning
                emit(
                    "data_check_changed",
                    check=check.name,
                    status=outcome.status,
                    was=previous.status,
                    detail=outcome.detail,
                )
            self._export(state)
        self.runner, self.checked_at = self.instance, at
        ttl = max(10 * self.config.interval, 60.0)
        await self.store.put_document(DOCUMENT, encode(self.states, self.instance, at), ttl)
        return True

    async def refresh(self) -> None:
        """Read the shared results (written by whichever instance runs the checks)."""
        if not self.config.checks:
            return
        raw = await self.store.document(DOCUMENT)
        if raw is None:
            return
        states, runner, at = decode(raw)
        for name, state in states.items():
            if name in self.states:  # a check removed from the config is forgotten
                self.states[name] = state
                self._export(state)
        self.runner, self.checked_at = runner, at

    def _export(self, state: CheckState) -> None:
        for status in ("pending", "ok", "failing", "unreachable", "error"):
            self.metrics.data_check_status.labels(state.name, status).set(1 if state.status == status else 0)
        if state.value is not None:
            self.metrics.data_check_value.labels(state.name).set(state.value)

    def view(self) -> DataChecksView:
        """For the admin API and the status page: no DSN, only the variable that names it."""
        by_name = {c.name: c for c in self.config.checks}
        return {
            "intervalSeconds": self.config.interval,
            "runner": self.runner,
            "checkedAt": self.checked_at,
            "checks": [
                {**state.to_json(), "dsnEnv": by_name[name].dsn_env, "query": by_name[name].query}
                for name, state in self.states.items()
            ],
        }


def replace_expected(state: CheckState, check: DataCheck) -> CheckState:
    """A reloaded config may have changed the expectation: the state shows the one in force."""
    return replace(state, expected=check.expectation, description=check.description)
