"""Files a configuration includes, merged into its document before the one validation.

``safety.rules_file`` (triggers, relative to the config file) and ``safety.data_checks.rules_file``
(checks, with the triggers that read them). Errors name the including key and the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.config_origin import Origins, compose
from gateway.errors import ConfigError

__all__ = ["include_data_checks_file", "include_rules_file"]


def include_rules_file(data: dict[str, Any], base: Path, origins: Origins) -> None:
    """Prepend the ``safety.triggers`` of ``safety.rules_file`` (relative to the config file) to the inline ones."""
    safety = data.get("safety")
    if not isinstance(safety, dict) or not safety.get("rules_file"):
        return
    rules_path = base / str(safety["rules_file"])
    try:
        text = rules_path.read_text(encoding="utf-8")
        rules = yaml.safe_load(text) or {}
    except OSError as exc:
        raise ConfigError(f"safety.rules_file: cannot read {rules_path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"safety.rules_file: {rules_path} is not valid YAML: {exc}") from exc
    nested = rules.get("safety") if isinstance(rules, dict) else None
    triggers = (nested or {}).get("triggers", []) if isinstance(nested, dict) else None
    if not isinstance(triggers, list):
        raise ConfigError(f"safety.rules_file: {rules_path} must hold a 'safety: triggers:' list")
    safety["triggers"] = [*triggers, *(safety.get("triggers") or [])]
    origins.rules, origins.rules_tree, origins.rules_count = str(rules_path), compose(text), len(triggers)


def include_data_checks_file(data: dict[str, Any], base: Path) -> None:
    """Prepend the checks of ``safety.data_checks.rules_file`` to the inline ones, and append its
    ``safety.triggers`` (the file ships its triggers with the checks they read)."""
    safety = data.get("safety")
    checks_cfg = safety.get("data_checks") if isinstance(safety, dict) else None
    if not isinstance(checks_cfg, dict) or not checks_cfg.get("rules_file"):
        return
    assert isinstance(safety, dict)
    rules_path = base / str(checks_cfg["rules_file"])
    key = "safety.data_checks.rules_file"
    try:
        rules = yaml.safe_load(rules_path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {rules_path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: {rules_path} is not valid YAML: {exc}") from exc
    nested = rules.get("safety") if isinstance(rules, dict) else None
    file_checks = nested.get("data_checks", {}) if isinstance(nested, dict) else None
    checks = file_checks.get("checks") if isinstance(file_checks, dict) else None
    triggers = nested.get("triggers", []) if isinstance(nested, dict) else None
    if not isinstance(checks, list) or not isinstance(triggers, list):
        raise ConfigError(f"{key}: {rules_path} must hold a 'safety: data_checks: checks:' list")
    checks_cfg["checks"] = [*checks, *(checks_cfg.get("checks") or [])]
    safety["triggers"] = [*(safety.get("triggers") or []), *triggers]
