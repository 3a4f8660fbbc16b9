"""Logging plumbing: the batched writer, the fast access-log path, timestamps."""

from __future__ import annotations

import io
import re

import orjson
import structlog
from structlog.testing import capture_logs

from gateway.logs import AccessLog, FastTimestamper, LogWriter, configure_logging


class _Stream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.bytes = io.BytesIO()

    @property
    def buffer(self) -> io.BytesIO:  # LogWriter writes bytes to the stream's buffer
        return self.bytes


def test_access_lines_go_straight_to_the_writer_as_json() -> None:
    stream = _Stream()
    writer = LogWriter(stream, interval=0.01)
    writer.json_lines = True
    AccessLog(writer).emit({"request_id": "r1", "status": 200, "upstream": "legacy"})
    writer.close()
    line = orjson.loads(stream.buffer.getvalue().splitlines()[0])
    assert line["event"] == "request" and line["level"] == "info" and line["request_id"] == "r1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["timestamp"])


def test_every_level_reaches_the_writer_through_the_configured_logger() -> None:
    # structlog calls the logger method named after the level; compiled by mypyc, `info = msg`
    # aliases were attributes never set, and every gateway process failed at its first log line.
    stream = _Stream()
    writer = LogWriter(stream, interval=0.01)
    try:
        configure_logging("debug", "json", writer)
        log = structlog.get_logger("test")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("x")
        writer.close()
        lines = [orjson.loads(line) for line in stream.buffer.getvalue().splitlines()]
        assert [line["event"] for line in lines] == ["d", "i", "w", "e", "c", "x"]
        assert "boom" in lines[-1]["exception"]
    finally:
        structlog.reset_defaults()


def test_without_json_lines_the_access_log_goes_through_structlog() -> None:
    writer = LogWriter(_Stream(), interval=0.01)
    with capture_logs() as logs:
        AccessLog(writer).emit({"request_id": "r2", "status": 502})
    writer.close()
    assert logs == [{"request_id": "r2", "status": 502, "event": "request", "log_level": "info"}]


def test_writer_is_bounded_and_counts_drops() -> None:
    stream = _Stream()
    writer = LogWriter(stream, max_pending=3, interval=60)
    counted: list[int] = []
    writer.on_drop = lambda: counted.append(1)  # what the server wires to gateway_log_lines_dropped_total
    for i in range(5):
        writer.write(b"%d\n" % i)
    assert writer.dropped == 2 and len(counted) == 2
    writer.close()  # flushes what was kept
    assert stream.buffer.getvalue() == b"0\n1\n2\n"


def test_timestamps_are_utc_with_milliseconds() -> None:
    event = FastTimestamper()(None, "info", {})
    assert event["timestamp"].endswith("Z") and len(event["timestamp"]) == len("2026-11-25T12:00:00.000Z")


def test_dropped_log_lines_are_counted_in_the_metrics() -> None:
    from gateway.server import GatewayServer
    from tests.conftest import make_config

    writer = LogWriter(_Stream(), max_pending=0, interval=60)
    server = GatewayServer(
        make_config({"legacy": "http://127.0.0.1:1", "candidate": "http://127.0.0.1:2"}), log_writer=writer
    )
    writer.write(b"lost\n")
    writer.close()
    body, _ = server.state.metrics.render()
    assert b"gateway_log_lines_dropped_total 1.0" in body
