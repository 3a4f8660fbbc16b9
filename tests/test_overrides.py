"""The local override file (gateway.flags.overrides): shared, atomic, never fatal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from structlog.testing import capture_logs

from gateway.flags.overrides import LocalOverride, LocalOverrides, default_state_dir, override_path


def override(percent: int, **kw: Any) -> LocalOverride:
    return LocalOverride(flag="default", percent=percent, actor="alice", reason="r", at=1.0, **kw)


def test_a_second_process_sees_what_the_first_wrote(tmp_path: Path) -> None:
    path = override_path(str(tmp_path), "cutover:", "redis://:secret@redis:6379/0")
    assert "secret" not in path.name and path.parent == tmp_path
    one, two = LocalOverrides(path), LocalOverrides(path)
    one.put(override(10))
    assert two.refresh() and two.items()["default"].percent == 10
    assert not two.refresh()  # unchanged file: nothing to do
    one.put(override(30))  # higher than pending: the lower one stays
    assert one.items()["default"].percent == 10


def test_remove_only_forgets_the_override_it_wrote_back(tmp_path: Path) -> None:
    store = LocalOverrides(tmp_path / "o.json")
    first = store.put(override(20))
    store.put(override(5, operation="op-2"))  # a newer, lower one arrived meanwhile
    store.remove(first)
    assert store.items()["default"].percent == 5
    store.remove(store.items()["default"])
    assert not store and not (tmp_path / "o.json").exists()


def test_a_damaged_file_is_logged_and_survived(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    store = LocalOverrides(path)
    store.put(override(0))
    path.write_text("{not json")
    with capture_logs() as logs:
        assert not LocalOverrides(path)  # a fresh process: nothing usable, but it starts
        store.refresh()
    assert store.items()["default"].percent == 0  # a running one keeps what it had
    assert any(e["event"] == "flag_override_file_invalid" for e in logs)


def test_default_dir_follows_xdg() -> None:
    assert default_state_dir({"XDG_STATE_HOME": "/var/lib/x"}) == Path("/var/lib/x/cutover")
    assert default_state_dir({}).parts[-3:] == (".local", "state", "cutover")


def test_an_unwritable_state_dir_never_fails_the_rollback(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state directory should be")
    store = LocalOverrides(blocker / "cutover" / "o.json")
    with capture_logs() as logs:
        kept = store.put(override(0))
    assert kept.percent == 0 and store.items()["default"].percent == 0  # applied in this process
    assert any(e["event"] == "flag_override_not_persisted" for e in logs)
    store.remove(kept)
    assert not store
