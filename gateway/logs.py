"""Structured logging: structlog set-up, the access log, and the thread that writes the lines.

Log lines are rendered on the event loop but written by a thread: a slow stdout (a full pipe,
a stalled log shipper) never blocks a request. If the writer falls far behind, lines are
dropped and counted rather than buffered without bound.
"""

from __future__ import annotations

import collections
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

import orjson
import structlog
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["AccessLog", "FastTimestamper", "LogWriter", "configure_logging"]


class LogWriter:
    """Writes rendered log lines from a daemon thread, in batches; bounded, drops and counts when behind.

    The request path only appends to a deque (thread-safe, no lock, no wake-up): waking a thread
    for every line costs more than rendering it. The thread flushes every ``interval`` seconds.
    """

    def __init__(self, stream: TextIO | None = None, max_pending: int = 100_000, interval: float = 0.05) -> None:
        self._stream = stream or sys.stdout
        self._pending: collections.deque[bytes] = collections.deque()
        self._max_pending = max_pending
        self._interval = interval
        self._closed = threading.Event()
        self.dropped = 0
        self.on_drop: Callable[[], None] | None = None  # e.g. the gateway_log_lines_dropped_total counter
        self.json_lines = False  # set by configure_logging: JSON renderer and info level on
        self._flusher = threading.Thread(target=self._run, name="log-writer", daemon=True)
        self._flusher.start()

    def write(self, line: bytes) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
            return
        self._pending.append(line)

    def _flush(self) -> None:
        pending = self._pending
        batch: list[bytes] = []
        while pending:
            batch.append(pending.popleft())
        if not batch:
            return
        data = b"".join(batch)
        out = getattr(self._stream, "buffer", None)
        try:
            if out is not None:
                out.write(data)
            else:
                self._stream.write(data.decode("utf-8", "replace"))
            self._stream.flush()
        except (OSError, ValueError):
            pass  # stdout closed: nothing sensible left to do with log lines

    def _run(self) -> None:
        while not self._closed.wait(self._interval):
            self._flush()
        self._flush()

    def close(self, timeout: float = 2.0) -> None:
        self._closed.set()
        self._flusher.join(timeout)


class FastTimestamper:
    """ISO-8601 UTC timestamps with milliseconds; the seconds part is formatted once per second."""

    __slots__ = ("_prefix", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, _logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        event_dict["timestamp"] = f"{self._prefix}.{int((now - second) * 1000):03d}Z"
        return event_dict


class _WriterLogger:
    """structlog logger that hands finished lines to the LogWriter (a deque its thread drains)."""

    def __init__(self, writer: LogWriter) -> None:
        self._writer = writer

    def msg(self, message: bytes | str) -> None:
        line = message if isinstance(message, bytes) else message.encode("utf-8", "replace")
        self._writer.write(line + b"\n")

    # structlog calls the method named after the level. Real methods, not `info = msg` aliases:
    # compiled by mypyc, an alias is an instance attribute that is never set.
    def log(self, message: bytes | str) -> None:
        self.msg(message)

    def debug(self, message: bytes | str) -> None:
        self.msg(message)

    def info(self, message: bytes | str) -> None:
        self.msg(message)

    def warn(self, message: bytes | str) -> None:
        self.msg(message)

    def warning(self, message: bytes | str) -> None:
        self.msg(message)

    def error(self, message: bytes | str) -> None:
        self.msg(message)

    def critical(self, message: bytes | str) -> None:
        self.msg(message)

    def exception(self, message: bytes | str) -> None:
        self.msg(message)

    def fatal(self, message: bytes | str) -> None:
        self.msg(message)


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class AccessLog:
    """One line per proxied request.

    With JSON logs at info level the line is rendered straight to the writer (one ``orjson.dumps``,
    a few microseconds); otherwise, or on a terminal, it goes through structlog like every other
    event. The fields and the line's shape are the same either way.
    """

    def __init__(self, writer: LogWriter | None = None) -> None:
        self._writer = writer if writer is not None and writer.json_lines else None
        self._stamp = FastTimestamper()
        self._log = structlog.get_logger("gateway.access")

    def emit(self, fields: dict[str, Any]) -> None:
        writer = self._writer
        if writer is None:
            self._log.info("request", **fields)
            return
        fields["event"] = "request"
        fields["level"] = "info"
        self._stamp(None, "info", fields)
        writer.write(orjson.dumps(fields) + b"\n")


def configure_logging(level: str, fmt: str, writer: LogWriter | None = None) -> LogWriter:
    """Set up structlog once per process: JSON lines, or a pretty console on a terminal."""
    writer = writer or LogWriter()
    use_console = fmt == "console" or (fmt == "auto" and sys.stdout.isatty())
    writer.json_lines = not use_console and _LEVELS[level] <= logging.INFO
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        FastTimestamper(),
        structlog.processors.format_exc_info,
    ]
    renderer: Any
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
        shared.remove(structlog.processors.format_exc_info)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=orjson.dumps)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=lambda *_args: _WriterLogger(writer),
        cache_logger_on_first_use=True,
    )
    # aiohttp and redis-py log through the standard library; route their warnings the same way.
    logging.basicConfig(
        level=max(_LEVELS[level], logging.WARNING), stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("aiohttp.access").disabled = True
    logging.getLogger("aiohttp.server").addFilter(_drop_client_protocol_errors)
    return writer


def _drop_client_protocol_errors(record: logging.LogRecord) -> bool:
    """aiohttp logs a traceback for every malformed request it refuses (a 400 it answers
    itself). Those are the client's errors, not ours, and would let anyone flood the logs."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, HttpProcessingError)
