"""Running the stack: up, down, build, provision, status, logs, prune, doctor, chroot-sync, trace."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from mailstack import accounts as accounts_module
from mailstack import chroot, doctor, trace
from mailstack import provision as provisioning
from mailstack.cli.common import JsonOpt, SchemaOpt, console, out, print_json, report
from mailstack.errors import MailstackError
from mailstack.settings import Settings
from mailstack.stack import SERVICES, WEBMAIL_SERVICES, WORLD_SERVICES, Stack, prune_stale
from mailstack.stack import swarm as swarm_stack


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
        "managesieve": "ManageSieve (Sieve filters): STARTTLS, then AUTH",
    }
    endpoints = stack.endpoints()
    for name, address in endpoints.as_dict().items():
        if name in notes and address is not None:
            table.add_row(name, address, notes[name])
    if endpoints.webmail_url:
        table.add_row("webmail", endpoints.webmail_url,
                      "Roundcube: log in with a full address; client autoconfiguration (mailstack client-config)")
    return table


def up(
    ctx: typer.Context,
    seed: Annotated[Path | None, typer.Option(help="seed file to apply after start (YAML)")] = None,
    build: Annotated[bool, typer.Option("--build", help="rebuild images even if cached")] = False,
    schema_name: SchemaOpt = None,
    from_production: Annotated[Path | None, typer.Option(
        "--from", help="a folder of files copied off a production server: postconf -n, master.cf, doveconf -n, "
                       "map files, dovecot-sql.conf.ext, a dump (.sql/.sql.gz)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="with --from: print the plan, start nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Provision what is missing, build (cached), start, wait until ready, seed (or load a production copy),
    print endpoints."""
    from mailstack.api import bring_up, production_plan
    from mailstack.seed import load as load_seed

    if schema_name is not None:
        ctx.obj.overrides["schema_flavour"] = schema_name
    settings: Settings = ctx.obj.settings
    if (dry_run or as_json) and from_production is None:
        raise MailstackError("--dry-run and --json go with --from DIR", "e.g. `mailstack up --from DIR --dry-run`")
    plan = production_plan(from_production) if from_production is not None else None  # refused before anything
    if plan is not None and (seed or settings.seed_file):
        raise MailstackError("--from and a seed file do not go together: the production dump is the data",
                             "drop --seed (or MAILSTACK_SEED_FILE); nothing was changed")
    if plan is not None and dry_run:
        if as_json:
            print_json(plan.as_json())
        else:
            _print_plan(plan)
        return
    seed_file = seed or settings.seed_file
    parsed = load_seed(seed_file) if seed_file else None  # validate before touching anything
    started = time.monotonic()
    with console.status("bringing the stack up") as status:
        def progress(message: str) -> None:
            report(message)
            status.update(message)
        stack = bring_up(settings, parsed, progress, force_build=build, plan=plan)
    if plan is not None:
        _print_plan(plan)
    out.print(_endpoint_table(stack))
    out.print(f"CA certificate: {stack.settings.ca_cert}  (ready in {time.monotonic() - started:.1f}s)")
    if seed_file:
        out.print(f"seeded from {seed_file}; try: mailstack inbox alice@example.test")


def _print_plan(plan: Any) -> None:
    for line in plan.report_lines():
        out.print(Text(line), soft_wrap=True)


def down(
    ctx: typer.Context,
    volumes: Annotated[bool, typer.Option("--volumes", "-v", help="also delete mail, queue and database")] = False,
) -> None:
    """Stop and remove the containers. Mail, queue and database are kept unless --volumes."""
    stack = ctx.obj.stack()
    stack.down(volumes=volumes)
    report("stopped" + (" and deleted all data" if volumes else " (data kept; `mailstack down --volumes` deletes it)"))


def build(ctx: typer.Context, force: Annotated[bool, typer.Option("--force")] = False) -> None:
    """Build the images (skipped when the images for the current sources exist)."""
    provisioning.provision(report)
    built = ctx.obj.stack().build(report, force=force)
    report("images built" if built else "images are up to date")


def provision() -> None:
    """Install what is missing on this machine: Docker engine, Compose v2, the base image."""
    provisioning.provision(report)
    report("Docker engine, Compose v2 and debian:bookworm-slim are ready")


def status(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Services' state and health, endpoints and the CA path (of the compose stack, else of a swarm stack of that
    name on the swarm this engine manages: `mailstack deploy swarm`)."""
    data = ctx.obj.stack().status()
    if all(info["state"] == "missing" for info in data["services"].values()):  # type: ignore[union-attr]
        on_swarm = swarm_stack.SwarmStack(ctx.obj.settings)
        if on_swarm.deployed():
            data = on_swarm.status()
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
        if name == "webmail" and address:
            address = f"http://{address}"
        out.print(f"{name:<11} {address or '-'}")
    out.print(f"ca_cert     {data['ca_cert'] or '-'}")
    if "swarm" in data:
        for node in data["swarm"]["nodes"]:  # type: ignore[index]
            out.print(f"node        {node['hostname']} {node['address']} {node['role']} {node['state']}"
                      + (" (MariaDB, Dovecot)" if node["storage"] else ""))


def logs(
    ctx: typer.Context,
    service: Annotated[str | None, typer.Argument(
        help=f"one of {', '.join(SERVICES + WORLD_SERVICES + WEBMAIL_SERVICES)}; all when omitted")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f")] = False,
    tail: Annotated[int | None, typer.Option("--tail", "-n", help="only the last N lines")] = None,
) -> None:
    """Show the containers' logs (Postfix's and Dovecot's mail logs included)."""
    stack = ctx.obj.stack()
    if service is not None and service not in stack.services:
        raise MailstackError(f"unknown service {service!r}", f"choose one of {', '.join(stack.services)}")
    stack.require_running()
    if follow:
        for _source, line in stack.follow_logs(service):
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()
        return
    sys.stdout.write(stack.logs(service, tail_lines=tail))


def prune(everything: Annotated[bool, typer.Option("--all", help="every disposable stack, even live ones")] = False
          ) -> None:
    """Remove disposable (test) stacks left behind by killed processes."""
    removed = prune_stale(everything=everything)
    report(f"removed {len(removed)} stack(s): {', '.join(removed)}" if removed else "nothing to prune")


# --- diagnosing -------------------------------------------------------------------------------

_STATUS_STYLE = {"ok": "green", "fail": "bold red", "skip": "yellow"}


def doctor_command(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option(help="look up this address (default: the first user)")] = None,
    fix_chroot: Annotated[bool, typer.Option("--fix-chroot", help="first re-copy Postfix's chroot files")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check the stack piece by piece: one line per check, a hint for each failure; exit 1 if any fails."""
    user = accounts_module.valid_login(user) if user is not None else None
    stack = ctx.obj.stack()
    if fix_chroot:
        stack.require_running()
        chroot.sync(stack)
        report("copied Postfix's chroot files again and reloaded Postfix")
    results = doctor.run(stack, user)
    failed = [result for result in results if result.failed]
    if as_json:
        print_json({"ok": not failed, "checks": [result.as_dict() for result in results]})
    else:
        width = max(len(result.name) for result in results)
        for result in results:
            line = Text(f"{result.status:<5}", style=_STATUS_STYLE[result.status])
            line.append(f" {result.name:<{width}}  {result.detail}")
            if result.hint:
                line.append(f"  hint: {result.hint}", style="yellow")
            out.print(line, soft_wrap=True)
        out.print(f"{len(failed)} of {len(results)} checks failed" if failed else f"all {len(results)} checks passed")
    if failed:
        raise typer.Exit(1)


def chroot_sync(ctx: typer.Context) -> None:
    """Copy resolv.conf, hosts, ... into Postfix's chroot again (Debian's script) and reload Postfix."""
    stack = ctx.obj.running_stack()
    chroot.sync(stack)
    problems = chroot.problems(stack)
    if problems:
        raise MailstackError(f"still different after the sync: {'; '.join(map(str, problems))}",
                             "`mailstack logs postfix`")
    report(f"{chroot.QUEUE_DIRECTORY}/etc matches /etc again; Postfix reloaded")


def trace_command(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(metavar="QUEUE_ID|MESSAGE_ID",
                                         help="a Postfix queue id or a Message-ID (an address finds rejections)")],
    as_json: JsonOpt = False,
) -> None:
    """Follow one message through Postfix's and Dovecot's logs: accepted, queued, delivered, saved; or why not."""
    if not query.strip():
        raise MailstackError("nothing to trace", "give a queue id (e.g. from `mailstack send`) or a Message-ID")
    stack = ctx.obj.running_stack()
    found = trace.trace(query, stack.logs("postfix"), stack.logs("dovecot"))
    if not found.found:
        raise MailstackError(f"nothing in the logs about {query.strip()}",
                             "give a queue id (`mailstack send` prints it) or a Message-ID; only the logs since the "
                             "containers started are searched (`mailstack logs postfix`)")
    if as_json:
        print_json(found.as_dict())
        return
    facts = [("queue id", ", ".join(found.queue_ids)), ("message-id", found.message_id and f"<{found.message_id}>"),
             ("from", found.sender is not None and f"<{found.sender}>"), ("client", found.client),
             ("sasl user", found.sasl_user), ("size", found.size and f"{found.size} bytes")]
    for label, value in facts:
        if value:
            out.print(Text(f"{label:<11} {value}"), soft_wrap=True)
    for event in found.events:
        out.print(Text(f"{event.time}  {event.source:<26} {event.what}"), soft_wrap=True)
    for line in found.outcome():
        out.print(Text(f"=> {line}", style="bold"), soft_wrap=True)
