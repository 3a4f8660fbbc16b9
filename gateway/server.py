"""Running the gateway: listeners, signals, graceful drain, and ``--workers`` processes.

On SIGTERM/SIGINT: /readyz turns 503 ("draining"), the proxy listener stops accepting, in-flight
requests get up to ``drain_timeout`` seconds to finish (keep-alive connections are closed after
their current response), then upstream pools and the flag store are closed.

With ``--workers N`` a supervisor starts N worker processes that each bind the same ports with
SO_REUSEPORT, so the kernel spreads connections over them; a worker that dies is restarted.
Metrics from all workers are aggregated through prometheus-client's multiprocess directory.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from contextlib import AsyncExitStack
from multiprocessing.process import BaseProcess

import structlog
from aiohttp import web

from gateway.app import build_listener, build_parts, create_admin_app, open_resources
from gateway.compiled import describe as describe_build
from gateway.compiled import stale_modules
from gateway.config import Config
from gateway.dataplane.listener import ProxyListener
from gateway.errors import ConfigError
from gateway.logs import AccessLog, LogWriter, configure_logging
from gateway.metrics import MULTIPROC_ENV
from gateway.reload import ConfigSource, Reloader
from gateway.restarts import RestartPolicy, RestartState
from gateway.tasks import Background

__all__ = ["GatewayServer", "new_event_loop", "run", "serve"]

log = structlog.get_logger("gateway.server")

CANCEL_GRACE = 0.1  # seconds the exchanges cut at the drain deadline get to log themselves
DRAIN_POLL = 0.02


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency; keep running without it
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class GatewayServer:
    """Both listeners of one gateway process; ``start()`` then ``stop()`` (drains)."""

    def __init__(
        self,
        config: Config,
        *,
        reuse_port: bool = False,
        source: ConfigSource | None = None,
        log_writer: LogWriter | None = None,
        supervisor: int | None = None,
    ) -> None:
        self.config = config
        self.parts = build_parts(config)
        self.state = self.parts.state
        self.state.access = AccessLog(log_writer)
        if log_writer is not None:
            log_writer.on_drop = self.state.metrics.log_dropped.inc
        self._reuse_port = reuse_port
        self._tasks = Background()
        self.reloader = Reloader(self.state, source, supervisor) if source is not None else None
        self.draining = asyncio.Event()  # set by stop(): /readyz answers 503 from then on
        self._resources: AsyncExitStack | None = None
        self._listener: ProxyListener | None = None
        self._admin_runner = web.AppRunner(
            create_admin_app(self.parts, reloader=self.reloader, draining=self.draining),
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1.0,
        )
        self.proxy_port = 0
        self.admin_port = 0
        self.redirect_port = 0

    @property
    def listener(self) -> ProxyListener | None:
        """The proxy listener once started: its pools, deadline sweep and TLS state."""
        return self._listener

    async def start(self) -> None:
        config = self.config
        loop = asyncio.get_running_loop()
        resources = AsyncExitStack()
        await resources.enter_async_context(open_resources(self.parts))
        self._resources = resources
        try:
            self._listener = build_listener(self.state, loop)
            await self._admin_runner.setup()
            await web.TCPSite(
                self._admin_runner, config.admin.listen.host, config.admin.listen.port, reuse_port=self._reuse_port
            ).start()
            await self._listener.start(self._reuse_port)
        except BaseException:
            if self._listener is not None:
                await self._listener.close()
            await self._admin_runner.cleanup()
            await resources.aclose()
            raise
        if self.reloader is not None and config.reload.watch:
            self._tasks.spawn(self.reloader.watch(config.reload.interval), name="config-watch")
        self.proxy_port = self._listener.port
        self.redirect_port = self._listener.redirect_port
        self.admin_port = self._admin_runner.addresses[0][1]
        stale = stale_modules()
        log.info(
            "gateway_started",
            listen=f"{config.listen.host}:{self.proxy_port}",
            admin=f"{config.admin.listen.host}:{self.admin_port}",
            tls=config.tls.enabled,
            store=self.state.store.backend,
            legacy=config.upstreams["legacy"].url,
            candidate=config.upstreams["candidate"].url,
            flags=dict(self.state.store.snapshot()),
            pid=os.getpid(),
            build=describe_build(stale),
        )
        if stale:
            log.warning(
                "compiled_modules_stale",
                modules=stale,
                effect="these run their compiled copy, not the edited source",
                fix="python3 setup.py build_ext --inplace",
            )

    def request_reload(self, trigger: str = "SIGHUP") -> None:
        """Reload the rules file (and the TLS certificate) in the background (signal handlers must not block)."""
        if self._listener is not None and self._listener.tls is not None:
            self._tasks.spawn(self._listener.reload_tls(), name="tls-reload")
        if self.reloader is None:
            log.warning("config_reload_unavailable", reason="the gateway was started without a config file")
            return
        self._tasks.spawn(self.reloader.reload(trigger), name="config-reload")

    async def stop(self) -> None:
        """Drain: readiness goes 503, stop accepting, finish in-flight work, close resources."""
        state = self.state
        self.draining.set()
        log.info("gateway_draining", in_flight=state.in_flight, deadline_seconds=self.config.drain_timeout)
        started = time.monotonic()
        cut_off = 0
        await self._tasks.close()
        try:
            listener = self._listener
            if listener is not None:
                listener.stop_accepting()  # idle keep-alive connections close; busy ones after their answer
                deadline = started + self.config.drain_timeout
                while state.in_flight > 0 and time.monotonic() < deadline:
                    await asyncio.sleep(DRAIN_POLL)
                cut_off = state.in_flight
                await listener.close()  # cuts what outlived the deadline, tunnels included
                grace = time.monotonic() + CANCEL_GRACE
                while state.in_flight > 0 and time.monotonic() < grace:
                    await asyncio.sleep(0)  # let the cut exchanges account for themselves
        finally:
            await self._admin_runner.cleanup()
            if self._resources is not None:
                await self._resources.aclose()
        log.info("gateway_stopped", drained_in_seconds=round(time.monotonic() - started, 3), cut_off=cut_off)


async def serve(
    config: Config,
    *,
    reuse_port: bool = False,
    stop: asyncio.Event | None = None,
    started: asyncio.Event | None = None,
    source: ConfigSource | None = None,
    log_writer: LogWriter | None = None,
    supervisor: int | None = None,
) -> None:
    """Serve until ``stop`` is set or SIGTERM/SIGINT arrives, then drain and close.

    ``started`` is set once both listeners accept connections; ``supervisor`` is the pid of the
    ``--workers`` supervisor when this is one of its workers.
    """
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    server = GatewayServer(config, reuse_port=reuse_port, source=source, log_writer=log_writer, supervisor=supervisor)
    loop.add_signal_handler(signal.SIGHUP, server.request_reload)
    try:
        await server.start()
        if started is not None:
            started.set()
        await stop.wait()
        await server.stop()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)


def _run_one(config: Config, reuse_port: bool, source: ConfigSource | None, supervisor: int | None = None) -> None:
    writer = configure_logging(config.log.level, config.log.format)
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(config, reuse_port=reuse_port, source=source, log_writer=writer, supervisor=supervisor))
    finally:
        writer.close()


def _worker_main(config: Config, source: ConfigSource | None, supervisor: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides; workers drain on SIGTERM
    _run_one(config, reuse_port=True, source=source, supervisor=supervisor)


def run(config: Config, workers: int = 1, source: ConfigSource | None = None) -> int:
    """Blocking entry point for ``gateway run``; returns the process exit code."""
    if workers < 1:
        raise ConfigError("--workers must be at least 1")
    if workers == 1:
        _run_one(config, reuse_port=False, source=source)
        return 0
    if config.redis.url is None:
        raise ConfigError(
            f"--workers {workers} needs a shared flag store: set REDIS_URL (the embedded store "
            "lives inside one process, so workers would disagree about flag values)"
        )
    return _supervise(config, workers, source)


def _supervise(config: Config, workers: int, source: ConfigSource | None) -> int:
    writer = configure_logging(config.log.level, config.log.format)
    metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
    os.environ[MULTIPROC_ENV] = metrics_dir
    ctx = multiprocessing.get_context("spawn")
    stopping = False
    procs: list[BaseProcess] = []

    def _stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    def _forward_hup(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGHUP)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGHUP, _forward_hup)

    def start(index: int) -> BaseProcess:
        proc = ctx.Process(target=_worker_main, args=(config, source, os.getpid()), name=f"gateway-worker-{index}")
        proc.start()
        return proc

    policy = RestartPolicy(
        config.supervisor.restart_backoff,
        config.supervisor.restart_backoff_max,
        config.supervisor.max_restarts,
        config.supervisor.stable_after,
    )
    slots = [RestartState(policy) for _ in range(workers)]
    procs.extend(start(i) for i in range(workers))
    for slot in slots:
        slot.started(time.monotonic())
    log.info("supervisor_started", workers=workers, pids=[p.pid for p in procs], metrics_dir=metrics_dir)
    exit_code = 0
    try:
        while not stopping:
            for i, proc in enumerate(procs):
                slot, now = slots[i], time.monotonic()
                if stopping or proc.is_alive():
                    continue
                if slot.restart_at is None:  # just died
                    _mark_dead(proc.pid)
                    wait = slot.died(now)
                    log.error(
                        "worker_died", pid=proc.pid, exitcode=proc.exitcode, crashes=slot.crashes, restart_in=wait
                    )
                    if wait is None:
                        log.critical(
                            "worker_restarts_exhausted",
                            worker=i,
                            crashes_in_a_row=slot.crashes,
                            last_exitcode=proc.exitcode,
                            effect="supervisor stops every worker and exits 1; see the worker's log above for why",
                        )
                        stopping, exit_code = True, 1
                elif slot.due(now):
                    procs[i] = start(i)
                    slot.started(now)
            time.sleep(0.05 if any(s.restart_at is not None for s in slots) else 0.2)
        log.info("supervisor_stopping", workers=len(procs))
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + config.drain_timeout + 5
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
        return exit_code
    finally:
        for proc in procs:
            _mark_dead(proc.pid)
        writer.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _mark_dead(pid: int | None) -> None:
    if pid is None:
        return
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
    except OSError:
        pass
