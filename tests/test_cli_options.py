"""The ``gateway`` command's surface, in process (click's CliRunner): documented command lines,
environment variables, usage errors. Commands against a live admin API are in test_cli.py."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from gateway.cli import cli, main

REPO = Path(__file__).resolve().parent.parent
COMMANDS = "run|demo|rollout|rollback|changes|explain|state|config|parity|events|triggers|readonly|report"
DOCUMENTED = re.compile(rf"(?:^|`|\$ |; |\| )gateway ((?:{COMMANDS})\b[^`#\n|;]*)", re.MULTILINE)


def documented_lines() -> list[str]:
    lines = set()
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for match in DOCUMENTED.finditer(doc.read_text()):
            lines.add(match.group(1).replace("[", " ").replace("]", " ").rstrip(" \\"))
    return sorted(lines)


def _option(command: click.Command, token: str) -> click.Option | None:
    name = token.split("=", 1)[0]
    return next((p for p in command.params if isinstance(p, click.Option) and name in p.opts), None)


def test_the_docs_show_many_command_lines() -> None:
    assert len(documented_lines()) > 40


@pytest.mark.parametrize("line", documented_lines())
def test_every_documented_command_line_names_real_commands_and_options(line: str) -> None:
    """Walks the line down the command tree: each word a group reads is one of its commands,
    each option is one the command it follows has (values and placeholders are not judged)."""
    command: click.Command = cli
    tokens = shlex.split(line)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if token.startswith("-") and token != "-":
            option = _option(command, token)
            assert option is not None, f"{line!r}: {command.name} has no option {token}"
            i += 1 if (option.is_flag or "=" in token) else 2
            continue
        if isinstance(command, click.Group):
            assert token in command.commands, f"{line!r}: {command.name} has no command {token!r}"
            command = command.commands[token]
        i += 1
    assert not isinstance(command, click.Group) or command.invoke_without_command, f"{line!r} names a group"


def test_json_stays_on_every_command_that_prints_an_answer() -> None:
    with_json = {
        "rollout status", "rollout forecast", "rollout plan start", "rollout plan status", "rollout plan pause",
        "rollout plan resume", "rollout plan abort", "rollout plan skip", "explain", "changes", "events",
        "triggers", "parity report", "parity diffs", "report readiness",
    }  # fmt: skip

    def walk(command: click.Command, path: str) -> dict[str, click.Command]:
        found = {path: command} if path else {}
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                found |= walk(sub, f"{path} {name}".strip())
        return found

    commands = walk(cli, "")
    assert with_json <= set(commands)
    for path in with_json:
        assert _option(commands[path], "--json") is not None, path


def test_version_and_help() -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("gateway ")
    result = runner.invoke(cli, ["rollout", "set", "-h"])
    assert result.exit_code == 0 and "GATEWAY_ADMIN_URL" in result.output and "--reason" in result.output


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["report", "readiness", "--json", "--markdown"], "exclude each other"),
        (["parity", "report", "--json", "--markdown"], "exclude each other"),
        (["rollout", "nope"], "No such command 'nope'"),
        (["explain", "--force", "sideways", "--subject", "s"], "'sideways' is not one of"),
        (["readonly", "default"], "usage: gateway readonly FLAG reject|candidate|off"),
        (["demo", "fault"], "usage: gateway demo fault errors|slow|down|parity|clear|status"),
        (["changes", "--limit", "0"], "--limit must be 1..1000, got 0"),
        (["rollout", "plan", "start", "--steps", "10,x"], "--steps must be comma-separated integers"),
    ],
)
def test_a_wrong_command_line_is_a_usage_error_and_sends_nothing(args: list[str], said: str) -> None:
    # An admin URL where nothing listens: a command that sent anything would fail with exit 1.
    result = CliRunner().invoke(cli, args, env={"GATEWAY_ADMIN_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 2, result.output
    assert said in result.stderr and "Traceback" not in result.stderr and not result.stdout


def test_errors_are_one_line_with_the_exit_code_main_returns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_ADMIN_URL", "not-a-url")
    assert main(["rollout", "status"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gateway: --admin / GATEWAY_ADMIN_URL must be") and len(err.splitlines()) == 1
    assert main(["rollout", "set", "150"]) == 1
    assert capsys.readouterr().err == "gateway: PERCENT must be an integer 0..100, got '150'\n"
    assert main(["explain"]) == 2
    assert "Missing option '--subject'" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "Commands:" in capsys.readouterr().out


def test_config_check_names_the_key_and_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams: {legacy: {url: 'http://l:1'}, candidate: {url: 'http://c:2'}}\nflags: {default: 500}\n")
    result = CliRunner().invoke(cli, ["config", "check", str(bad)])
    assert result.exit_code == 2 and result.stderr.startswith("gateway: ") and "flags" in result.stderr
    result = CliRunner().invoke(cli, ["config", "check", str(REPO / "rules" / "gateway.yaml")])
    assert result.exit_code == 0 and "valid" in result.stdout


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What `gateway run` hands the server: the config and the worker count (no listener starts)."""
    calls: list[dict[str, Any]] = []

    def run(config: Any, workers: int = 1, source: Any = None) -> int:
        calls.append({"config": config, "workers": workers, "source": source})
        return 0

    monkeypatch.setattr("gateway.server.run", run)
    return calls


ENV: dict[str, str | None] = {  # None: unset, whatever the environment of the test run says
    "GATEWAY_LEGACY_URL": "http://127.0.0.1:3000",
    "GATEWAY_CANDIDATE_URL": "http://127.0.0.1:3001",
    "GATEWAY_CONFIG": None,
    "GATEWAY_WORKERS": None,
    "GATEWAY_ADMIN_LISTEN": None,
    "REDIS_URL": None,
}


def test_run_options_map_onto_the_config(served: list[dict[str, Any]]) -> None:
    args = ["run", "--listen", "127.0.0.1:18080", "--admin-listen", "127.0.0.1:19090", "-w", "3"]
    result = CliRunner().invoke(cli, args, env={**ENV, "GATEWAY_LISTEN": "0.0.0.0:1"})
    assert result.exit_code == 0, result.output
    (call,) = served
    assert call["workers"] == 3 and call["source"] is None
    assert (str(call["config"].listen), str(call["config"].admin.listen)) == ("127.0.0.1:18080", "127.0.0.1:19090")


def test_run_reads_its_variables(served: list[dict[str, Any]]) -> None:
    config = REPO / "rules" / "gateway.yaml"
    env = {**ENV, "GATEWAY_CONFIG": str(config), "GATEWAY_WORKERS": "2", "GATEWAY_LISTEN": "127.0.0.1:18081"}
    result = CliRunner().invoke(cli, ["run"], env=env)
    assert result.exit_code == 0, result.output
    (call,) = served
    assert call["workers"] == 2 and call["source"] is not None and str(call["config"].listen) == "127.0.0.1:18081"
    result = CliRunner().invoke(cli, ["run"], env={**env, "GATEWAY_WORKERS": "two"})
    assert result.exit_code == 2 and "GATEWAY_WORKERS" in result.stderr and len(served) == 1
