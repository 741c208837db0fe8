"""The `mailstack` command line: thin typer commands over the modules that do the work."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from mailstack import provision as provisioning
from mailstack.errors import MailstackError
from mailstack.settings import Settings, load_settings
from mailstack.stack import SERVICES, Stack, prune_stale

app = typer.Typer(
    help="A real Postfix + Dovecot + MariaDB mail stack in Docker. Start with `mailstack up`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out = Console()

ProjectOpt = Annotated[str | None, typer.Option("--project", "-p", help="compose project name [env: MAILSTACK_PROJECT]")]
StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="where secrets, certificates and rendered "
                                               "configs live [env: MAILSTACK_STATE_DIR]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]


class Context:
    """Settings resolved once per invocation, from the global options, the environment and .env."""

    def __init__(self, **overrides: object) -> None:
        self.overrides = overrides
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(**self.overrides)
        return self._settings

    def stack(self) -> Stack:
        return Stack(self.settings)


@app.callback()
def main_options(ctx: typer.Context, project: ProjectOpt = None, state_dir: StateOpt = None) -> None:
    ctx.obj = Context(project=project, state_dir=state_dir)


def report(message: str) -> None:
    console.print(f"[dim]•[/dim] {message}")


def _endpoint_table(stack: Stack) -> Table:
    table = Table(title=f"mailstack '{stack.settings.project}' is up", title_justify="left")
    table.add_column("service")
    table.add_column("address")
    table.add_column("notes")
    notes = {
        "smtp": "inbound SMTP, no AUTH; STARTTLS offered",
        "submission": "STARTTLS required, then AUTH",
        "smtps": "implicit TLS, AUTH",
        "imaps": "IMAP over TLS",
        "pop3s": "POP3 over TLS",
    }
    for name, address in stack.endpoints().as_dict().items():
        table.add_row(name, address, notes[name])
    return table


@app.command()
def up(
    ctx: typer.Context,
    seed: Annotated[Path | None, typer.Option(help="seed file to apply after start (YAML)")] = None,
    build: Annotated[bool, typer.Option("--build", help="rebuild images even if cached")] = False,
) -> None:
    """Provision what is missing, build (cached), start, wait until ready, seed, print endpoints."""
    from mailstack.api import bring_up
    from mailstack.seed import load as load_seed

    settings: Settings = ctx.obj.settings
    seed_file = seed or settings.seed_file
    parsed = load_seed(seed_file) if seed_file else None  # validate before touching anything
    started = time.monotonic()
    with console.status("bringing the stack up") as status:
        def progress(message: str) -> None:
            report(message)
            status.update(message)
        if build:
            provisioning.provision(progress)
            Stack(settings).build(progress, force=True)
        stack = bring_up(settings, parsed, progress)
    out.print(_endpoint_table(stack))
    out.print(f"CA certificate: {settings.ca_cert}  (ready in {time.monotonic() - started:.1f}s)")
    if seed_file:
        out.print(f"seeded from {seed_file}; try: mailstack inbox alice@example.test")


@app.command()
def down(
    ctx: typer.Context,
    volumes: Annotated[bool, typer.Option("--volumes", "-v", help="also delete mail, queue and database")] = False,
) -> None:
    """Stop and remove the containers. Mail, queue and database are kept unless --volumes."""
    stack = ctx.obj.stack()
    stack.down(volumes=volumes)
    report("stopped" + (" and deleted all data" if volumes else " (data kept; `mailstack down --volumes` deletes it)"))


@app.command()
def build(ctx: typer.Context, force: Annotated[bool, typer.Option("--force")] = False) -> None:
    """Build the images (skipped when the images for the current sources exist)."""
    provisioning.provision(report)
    built = ctx.obj.stack().build(report, force=force)
    report("images built" if built else "images are up to date")


@app.command()
def provision() -> None:
    """Install what is missing on this machine: Docker engine, Compose v2, the base image."""
    provisioning.provision(report)
    report("Docker engine, Compose v2 and debian:bookworm-slim are ready")


@app.command()
def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Services' state and health, endpoints and the CA path."""
    data = ctx.obj.stack().status()
    if as_json:
        out.print_json(json.dumps(data))
        return
    table = Table(title=f"mailstack '{ctx.obj.settings.project}'", title_justify="left")
    table.add_column("service")
    table.add_column("state")
    table.add_column("health")
    for name, info in data["services"].items():  # type: ignore[union-attr]
        table.add_row(name, info["state"], info["health"] or "-")
    out.print(table)
    for name, address in data["endpoints"].items():  # type: ignore[union-attr]
        out.print(f"{name:<11} {address or '-'}")
    out.print(f"ca_cert     {data['ca_cert'] or '-'}")


@app.command()
def logs(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Argument(help=f"one of {', '.join(SERVICES)}; all when omitted")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    tail: Annotated[int | None, typer.Option("--tail", "-n", help="only the last N lines")] = None,
) -> None:
    """Show the containers' logs (Postfix's and Dovecot's mail logs included)."""
    if service is not None and service not in SERVICES:
        raise MailstackError(f"unknown service {service!r}", f"choose one of {', '.join(SERVICES)}")
    stack = ctx.obj.stack()
    stack.require_running()
    if follow:
        for _source, line in stack.follow_logs(service):
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()
        return
    sys.stdout.write(stack.logs(service, tail_lines=tail))


@app.command()
def prune(everything: Annotated[bool, typer.Option("--all", help="every disposable stack, even live ones")] = False
          ) -> None:
    """Remove disposable (test) stacks left behind by killed processes."""
    removed = prune_stale(everything=everything)
    report(f"removed {len(removed)} stack(s): {', '.join(removed)}" if removed else "nothing to prune")


def main() -> None:
    try:
        app()
    except MailstackError as exc:
        console.print(f"[red]error:[/red] {exc.message}")
        if exc.hint:
            console.print(f"[yellow]hint:[/yellow] {exc.hint}")
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
