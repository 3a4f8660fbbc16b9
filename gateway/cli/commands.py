"""The ``gateway`` command: the root group, the commands that run something on this host
(``run``, ``demo``, ``config check``), and ``main()`` with the exit codes.

Exit codes: 0 done; 1 an error the operator can act on (one ``gateway: ...`` line on stderr);
2 a wrong command line or an invalid configuration; 3 ``report readiness`` found a flag not
ready; 130 interrupted.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import click

from gateway import __version__
from gateway.cli.client import CliError, UsageError, admin_call
from gateway.cli.flags import changes, explain, rollback, rollout
from gateway.cli.render import config_lines
from gateway.cli.reports import parity, report
from gateway.cli.safety import events, plan, readonly, triggers
from gateway.cli.state import state
from gateway.errors import ConfigError

__all__ = ["cli", "main"]

FAULT_CHOICES = ("errors", "slow", "down", "parity", "clear", "status")


class _ConfigInvalid(CliError):
    exit_code = 2


class _Gateway(click.Group):
    """Errors of the layers below become one line and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            raise _ConfigInvalid(str(exc)) from exc
        except OSError as exc:  # e.g. the port is taken, or -o names a directory
            if exc.errno == errno.EPIPE:
                raise  # click quiets a closed pipe (`gateway changes | head`)
            raise CliError(exc.strerror or str(exc)) from exc
        except KeyboardInterrupt:
            raise click.exceptions.Exit(130) from None


@click.group(cls=_Gateway, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gateway", message="%(prog)s %(version)s")
def cli() -> None:
    """Cutover traffic-splitting gateway.

    Operator commands talk to the admin API: --admin URL or GATEWAY_ADMIN_URL, the token from
    GATEWAY_ADMIN_TOKEN. `gateway run` also reads the overrides in gateway.config.ENV_OVERRIDES.
    """


@cli.result_callback()
def _exit_code(code: int | None) -> None:
    """A command returns its exit code; a non-zero one ends the process with it."""
    if code:
        raise click.exceptions.Exit(code)


@cli.command()
@click.option("--config", "-c", metavar="FILE", envvar="GATEWAY_CONFIG", show_envvar=True, help="YAML config file")
@click.option(
    "--workers",
    "-w",
    type=int,
    default=1,
    envvar="GATEWAY_WORKERS",
    show_envvar=True,
    help="worker processes (needs REDIS_URL when > 1)",
)
@click.option("--listen", metavar="HOST:PORT", help="proxy listener (overrides GATEWAY_LISTEN)")
@click.option("--admin-listen", metavar="HOST:PORT", help="admin listener (overrides GATEWAY_ADMIN_LISTEN)")
def run(config: str | None, workers: int, listen: str | None, admin_listen: str | None) -> int:
    """Run the gateway."""
    from gateway.config import load_config
    from gateway.reload import ConfigSource
    from gateway.server import run as serve

    env = dict(os.environ)  # the options win over the variables they name, like any other source
    if listen:
        env["GATEWAY_LISTEN"] = listen
    if admin_listen:
        env["GATEWAY_ADMIN_LISTEN"] = admin_listen
    loaded = load_config(config, env)
    source = ConfigSource(config, env) if config else None
    return serve(loaded, workers=workers, source=source)


@cli.group(invoke_without_command=True)
@click.option("--port", type=int, default=8080, help="gateway port (default 8080)")
@click.option("--admin-port", type=int, default=9090, help="admin port (default 9090)")
@click.option("--legacy-port", type=int, default=8081, help="sample legacy backend port (default 8081)")
@click.option("--candidate-port", type=int, default=8082, help="sample candidate backend port (default 8082)")
@click.option("--control-port", type=int, default=8083, help="the fault switch's port (default 8083)")
@click.option("--no-traffic", is_flag=True, help="no background traffic from simulated users")
@click.pass_context
def demo(
    ctx: click.Context,
    port: int,
    admin_port: int,
    legacy_port: int,
    candidate_port: int,
    control_port: int,
    no_traffic: bool,
) -> int:
    """Start two sample upstreams and the gateway on the embedded store; 'demo fault F' breaks the candidate."""
    if ctx.invoked_subcommand is not None:
        return 0
    from gateway.demo import DemoPorts, run_demo

    return run_demo(DemoPorts(port, admin_port, legacy_port, candidate_port, control_port), traffic=not no_traffic)


@demo.command("fault")
@click.argument("fault", metavar="FAULT", required=False, type=click.Choice(FAULT_CHOICES))
@click.option(
    "--control",
    metavar="URL",
    default="http://127.0.0.1:8083",
    show_default=True,
    envvar="GATEWAY_DEMO_CONTROL_URL",
    show_envvar=True,
    help="the running demo's fault switch",
)
def demo_fault(fault: str | None, control: str) -> int:
    """Switch the running demo's candidate FAULT: errors|slow|down|parity, 'clear' heals it, 'status' shows it."""
    if fault is None:
        raise UsageError(f"usage: gateway demo fault {'|'.join(FAULT_CHOICES)}")
    try:
        if fault == "status":
            data = admin_call(control, "GET", "/fault")
        else:
            data = admin_call(control, "POST", f"/fault/{fault}", {})
    except CliError as exc:
        raise CliError(
            f"cannot switch the demo's fault at {control} (is 'gateway demo' running? its banner prints "
            f"GATEWAY_DEMO_CONTROL_URL): {exc}"
        ) from exc
    click.echo(f"sample candidate: {'fault ' + data['fault'] if data['fault'] else 'healthy (no fault)'}")
    return 0


@cli.group()
def config() -> None:
    """Configuration tools."""


@config.command("check")
@click.argument("file")
def config_check(file: str) -> int:
    """Validate a config FILE and print the resulting route table."""
    from gateway.config import load_config

    click.echo("\n".join(config_lines(file, load_config(file))))
    return 0


rollout.add_command(plan)
for command in (rollout, rollback, changes, explain, state, parity, events, triggers, readonly, report):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> int:
    """The console script: run one command and return its exit code."""
    try:
        code = cli.main(args=argv, prog_name="gateway", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.Abort:  # Ctrl-C while click itself was reading
        return 130
    return code if isinstance(code, int) else 0
