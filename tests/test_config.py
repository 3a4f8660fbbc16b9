"""Configuration: YAML + environment, errors that name the key and the expectation."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_config
from gateway.errors import ConfigError

BASE_ENV = {"GATEWAY_LEGACY_URL": "http://127.0.0.1:3000", "GATEWAY_CANDIDATE_URL": "http://127.0.0.1:3001"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(text)
    return path


def test_runs_from_environment_alone() -> None:
    config = load_config(None, {**BASE_ENV, "GATEWAY_LISTEN": "127.0.0.1:8181", "GATEWAY_ADMIN_TOKEN": "s3cret-token"})
    assert config.listen.port == 8181 and config.listen.host == "127.0.0.1"
    assert config.admin.listen.port == 9090 and config.admin.listen.host == "127.0.0.1"
    assert config.admin.token == "s3cret-token"
    assert config.redis.url is None
    assert config.flags == {"default": 0}


def test_missing_upstream_names_the_env_var() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, {"GATEWAY_LEGACY_URL": "http://127.0.0.1:3000"})
    assert "upstreams" in str(info.value) and "GATEWAY_CANDIDATE_URL" in str(info.value)


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "upstreams:\n  legacy: {url: 'http://a:1'}\n  candidate: {url: 'http://b:2'}\nlisten: '0.0.0.0:7000'\n",
    )
    config = load_config(path, {"GATEWAY_LISTEN": ":7001", "REDIS_URL": "redis://127.0.0.1:6390/2"})
    assert config.listen.port == 7001 and config.listen.host == "0.0.0.0"
    assert config.upstreams["legacy"].url == "http://a:1"
    assert config.redis.url == "redis://127.0.0.1:6390/2"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("routes:\n  - {prefix: /api/v1/auth/, pin: legcy}\n", "routes.0.pin"),
        ("routes:\n  - {prefix: /api/v1/x/, flag: nope}\n", "flag 'nope' is not declared"),
        ("routes:\n  - {prefix: api/v1/x/, flag: default}\n", "routes.0.prefix"),
        ("routes:\n  - {prefix: /x, flag: default, pin: legacy}\n", "exactly one of 'flag'"),
        ("routes:\n  - {prefix: /x, methods: [FETCH], flag: default}\n", "unknown HTTP method"),
        ("flags: {default: 150}\n", "0..100"),
        ("flags: {default: abc}\n", "flags.default"),
        ("flags: {default: true}\n", "flags.default: expected an integer percentage 0..100, got True"),
        ("flags: {checkout: 50.0}\n", "flags.checkout"),
        ("flags: {checkout: '50'}\n", "flags.checkout"),
        ("flags: [default]\n", "flags: expected a mapping"),
        ("supervisor: {max_restarts: -1}\n", "supervisor.max_restarts"),
        ("flags: {'Bad Name': 1}\n", "flag name"),
        ("listen: nowhere\n", "listen"),
        ("redis: {url: 'http://x'}\n", "redis.url"),
        ("unknown_key: 1\n", "unknown_key: unknown key"),
        ("log: {level: loud}\n", "log.level"),
        ("force: {secret: short}\n", "force.secret"),
        # Configured headers are written into every answer's head: a line break would start a new
        # header line, a character beyond Latin-1 would fail every answer.
        ('security_headers: {headers: {X-Test: "a\\r\\nSet-Cookie: x=1"}}\n', "headers.X-Test: expected"),
        ('security_headers: {headers: {X-Test: "caf\\u00e9 \\u2603"}}\n', "security_headers.headers.X-Test: expected"),
        ('security_headers: {hsts: "max-age=1\\n"}\n', "security_headers.hsts: expected"),
        ("security_headers: {routes: [{prefix: /x, headers: {X-Frame-Options: ' DENY'}}]}\n", "routes.0.headers"),
        ("request_id_header: 'X Request Id'\n", "request_id_header: expected an HTTP header name"),
        ("force: {header: 'X-Force:'}\n", "force.header: expected an HTTP header name"),
        ("safety: {legacy_read_only: {default: {retry_after: 100000000000000000000000}}}\n", "retry_after"),
    ],
)
def test_invalid_file_names_key(tmp_path: Path, yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, yaml_text), BASE_ENV)
    assert expected in str(info.value), str(info.value)


def test_latin1_header_values_are_accepted(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, 'security_headers: {headers: {X-Note: "caf\\u00e9"}}\n'), BASE_ENV)
    assert config.security_headers.headers["X-Note"] == "caf\u00e9"


def test_bad_upstream_url(tmp_path: Path) -> None:
    text = "upstreams:\n  legacy: {url: 'ftp://x'}\n  candidate: {url: 'http://b:2'}\n"
    with pytest.raises(ConfigError, match="upstreams.legacy.url: expected an http"):
        load_config(_write(tmp_path, text), {})


def test_yaml_syntax_error_has_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "routes: [\n  - {prefix: /x\n"), BASE_ENV)
    assert "not valid YAML at line" in str(info.value)


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_config(_write(tmp_path, "- a\n- b\n"), BASE_ENV)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config("/nonexistent/gateway.yaml", BASE_ENV)


def test_shipped_rules_files_are_valid() -> None:
    rules = Path(__file__).parent.parent / "rules"
    files = sorted(rules.glob("*.yaml"))
    assert files, "rules/ ships example files"
    for path in files:
        load_config(path, BASE_ENV)


def test_cli_invalid_config_exits_2_without_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, "routes:\n  - {prefix: /api/v1/auth/, pin: legcy}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "--config", str(path)],
        env={**BASE_ENV, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "routes.0.pin" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_shipped_limits_match_the_audit() -> None:
    config = load_config(Path(__file__).parent.parent / "rules" / "limits.yaml", BASE_ENV)
    rules = {rule.name: rule for rule in config.rate_limits.rules}
    assert (rules["per-user"].prefix, rules["per-user"].limit, rules["per-user"].period) == ("/", 100, 60.0)
    assert (rules["login-per-account"].body_field, rules["login-per-account"].normalize) == ("email", "lower")
    assert config.rate_limits.body_cap == 4096
    for name, key in (("login-per-ip", "ip"), ("login-per-account", "body_field")):
        rule = rules[name]
        assert (rule.prefix, rule.methods, rule.key, rule.limit, rule.period) == (
            "/api/v1/auth/login",
            frozenset({"POST"}),
            key,
            5,
            60.0,
        )


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("rate_limits: {rules: [{limit: 0}]}\n", "rate_limits.rules.0.limit"),
        ("rate_limits: {rules: [{limit: 5, key: user}]}\n", "rate_limits.rules.0.key"),
        ("rate_limits: {rules: [{limit: 5, period: fortnight}]}\n", "rate_limits.rules.0.period"),
        ("rate_limits: {rules: [{limit: 5, methods: [FETCH]}]}\n", "unknown HTTP method"),
        ("trusted_proxies: [10.0.0.300/8]\n", "trusted_proxies.0"),
        ("cors: {allow_origins: ['*'], allow_credentials: true}\n", "cannot be combined"),
        ("cors: {allow_origins: ['app.example.org']}\n", "cors.allow_origins"),
        ("security_headers: {headers: {'Bad Header': x}}\n", "security_headers.headers"),
        ("limits: {max_body_bytes: -1}\n", "limits.max_body_bytes"),
    ],
)
def test_invalid_protection_settings_name_the_key(tmp_path: Path, yaml_text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, yaml_text), BASE_ENV)
    assert expected in str(info.value), str(info.value)


def test_errors_in_an_included_rules_file_are_reported_against_that_file(tmp_path: Path) -> None:
    (tmp_path / "rollback.yaml").write_text(
        "safety:\n"
        "  triggers:\n"
        "    - {name: errors, kind: error_rate, threshold: 0.05}\n"
        "    - name: p95\n"
        "      kind: latency\n"
        "      treshold: 1.0\n"
    )
    text = "safety:\n  rules_file: rollback.yaml\n  triggers:\n    - {name: inline, kind: error_rate, threshold: 2}\n"
    main = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(main, BASE_ENV)
    lines = str(info.value).splitlines()
    assert lines[0] == f"invalid configuration ({main}):"
    typo = next(line for line in lines if "treshold" in line)
    assert typo == f"  safety.triggers.1.treshold: unknown key (in {tmp_path / 'rollback.yaml'}, line 6)"
    inline = next(line for line in lines if "threshold" in line and "treshold" not in line)
    assert inline.startswith("  safety.triggers.0.threshold: ") and inline.endswith("(line 4)")  # its index in main
    assert "rollback.yaml" not in inline


def test_errors_from_the_environment_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, "flags: {default: 0}\n"), {**BASE_ENV, "GATEWAY_ADMIN_PROTECT_READS": "maybe"})
    assert "admin.protect_reads: " in str(info.value) and "(from GATEWAY_ADMIN_PROTECT_READS)" in str(info.value)


def test_a_typo_in_the_shipped_rollback_rules_names_rollback_yaml(tmp_path: Path) -> None:
    rules = Path(__file__).parent.parent / "rules"
    (tmp_path / "gateway.yaml").write_text((rules / "gateway.yaml").read_text())
    broken = (rules / "rollback.yaml").read_text().replace("min_requests: 100", "min_request: 100", 1)
    (tmp_path / "rollback.yaml").write_text(broken)
    line = broken.splitlines().index("      min_request: 100") + 1
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "config", "check", str(tmp_path / "gateway.yaml")],
        env={**BASE_ENV, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"safety.triggers.0.min_request: unknown key (in {tmp_path / 'rollback.yaml'}, line {line})" in proc.stderr
