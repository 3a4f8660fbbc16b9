"""Command line: ``gateway run|demo|rollout|rollback|changes|explain|state|config|parity|events|``
``triggers|readonly|report``, on click.

Thin: the operator commands talk to the admin API (``client``), print what it answered
(``render``, or ``--json``), and share their options (``params``). Environment variables have
one prefix: GATEWAY_ADMIN_URL, GATEWAY_ADMIN_TOKEN, GATEWAY_CONFIG, GATEWAY_WORKERS,
GATEWAY_DEMO_CONTROL_URL, and the server overrides listed in ``gateway.config.ENV_OVERRIDES``.
"""

from gateway.cli.commands import cli, main

__all__ = ["cli", "main"]
