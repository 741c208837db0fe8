"""The `mailstack` command line: thin typer commands over the modules that do the work."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from mailstack import accounts as accounts_module
from mailstack import chroot, client, doctor, schema, snapshots, trace
from mailstack import provision as provisioning
from mailstack import queue as queue_module
from mailstack import sieve as sieve_module
from mailstack.db import Database
from mailstack.errors import MailstackError
from mailstack.settings import Settings, load_settings
from mailstack.stack import SERVICES, Stack, prune_stale

console = Console(stderr=True)
out = Console()


def show_error(exc: MailstackError) -> None:
    """One line saying what failed, one with the hint (markup in messages is printed as is)."""
    console.print(f"[red]error:[/red] {escape(exc.message)}", soft_wrap=True)
    if exc.hint:
        console.print(f"[yellow]hint:[/yellow] {escape(exc.hint)}", soft_wrap=True)


class _Group(TyperGroup):
    """Every command's MailstackError ends as `error: ...` + `hint: ...` and exit 1 (also under CliRunner)."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except MailstackError as exc:
            show_error(exc)
            raise typer.Exit(1) from exc


app = typer.Typer(
    cls=_Group,
    help="A real Postfix + Dovecot + MariaDB mail stack in Docker. Start with `mailstack up`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)
domain_app = typer.Typer(help="Mail domains: add, list, remove.", no_args_is_help=True)
user_app = typer.Typer(help="Mailbox users: add, list, passwd, set-quota, remove.", no_args_is_help=True)
alias_app = typer.Typer(help="Aliases (forwardings): add, list, remove.", no_args_is_help=True)
alias_domain_app = typer.Typer(help="Alias domains (anyone@ALIAS gets anyone@TARGET's mail): add, list, remove.",
                               no_args_is_help=True)
catch_all_app = typer.Typer(help="Catch-alls (mail to unknown addresses of a domain): set, list, remove.",
                            no_args_is_help=True)
app.add_typer(domain_app, name="domain")
app.add_typer(user_app, name="user")
app.add_typer(alias_app, name="alias")
app.add_typer(alias_domain_app, name="alias-domain")
app.add_typer(catch_all_app, name="catch-all")
queue_app = typer.Typer(help="Postfix's queue: list, show, flush, hold, release, delete, requeue.",
                        no_args_is_help=True)
app.add_typer(queue_app, name="queue")
sieve_app = typer.Typer(help="Users' Sieve filters (applied at delivery): set, get, list, remove.",
                        no_args_is_help=True)
app.add_typer(sieve_app, name="sieve")
snapshot_app = typer.Typer(help="Snapshots of the database, maildirs and queue: save, restore, list, delete.",
                           no_args_is_help=True)
app.add_typer(snapshot_app, name="snapshot")

ProjectOpt = Annotated[str | None, typer.Option("--project", "-p",
                                                help="compose project name [env: MAILSTACK_PROJECT]")]
StateOpt = Annotated[Path | None, typer.Option("--state-dir", help="where secrets, certificates and rendered "
                                               "configs live [env: MAILSTACK_STATE_DIR]")]
SchemaOpt = Annotated[str | None, typer.Option("--schema", help="schema flavour: default, virtual or postfixadmin "
                                               "[env: MAILSTACK_SCHEMA]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
PasswordStdinOpt = Annotated[bool, typer.Option("--password-stdin",
                                                help="read the password from the first line of standard input")]


class Context:
    """Settings resolved once per invocation, from the global options, the environment and .env."""

    def __init__(self, **overrides: object) -> None:
        self.overrides = overrides
        self._settings: Settings | None = None
        self._stack: Stack | None = None
        self._database: Database | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(**self.overrides)
        return self._settings

    def stack(self) -> Stack:
        if self._stack is None:
            self._stack = Stack(self.settings)
        return self._stack

    def running_stack(self) -> Stack:
        """The stack, or StackNotRunning ("run `make up`")."""
        stack = self.stack()
        stack.require_running()
        return stack

    def database(self) -> Database:
        if self._database is None:
            database = Database.for_stack(self.running_stack())  # in the flavour the database records
            database.check_flavour()  # and, when the settings name one, the same
            self._database = database
        return self._database

    def flavour(self) -> schema.Flavour:
        """The settings' flavour when they name one, else the one this stack was rendered with (its state
        directory says; no stack or database is asked, so that checks run before any prompt)."""
        if "schema_flavour" in self.settings.model_fields_set:
            return schema.flavour(self.settings.schema_flavour)
        return schema.flavour(schema.rendered_flavour(self.settings.config_dir) or self.settings.schema_flavour)

    def accounts(self) -> accounts_module.Accounts:
        return accounts_module.Accounts(self.database, self.settings.password_scheme, self.settings.hash_cost,
                                        self.flavour())


@app.callback()
def main_options(ctx: typer.Context, project: ProjectOpt = None, state_dir: StateOpt = None,
                 schema_name: SchemaOpt = None) -> None:
    ctx.obj = Context(project=project, state_dir=state_dir, schema_flavour=schema_name)


def report(message: str) -> None:
    console.print(f"[dim]•[/dim] {message}", soft_wrap=True)


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
    for name, address in stack.endpoints().as_dict().items():
        table.add_row(name, address, notes[name])
    return table


@app.command()
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
            _print_json(plan.as_json())
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


# --- helpers for the data commands ------------------------------------------------------------

def _print_json(data: object) -> None:
    out.print_json(json.dumps(data))


def _table(title: str, columns: list[str], rows: list[list[object]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))  # Text: no markup in data
    return table


def read_password(from_stdin: bool, confirm: bool, prompt: str = "Password",
                  before_prompt: Callable[[], object] | None = None) -> str:
    """From the first line of stdin (--password-stdin) or a hidden prompt; never from the command line.
    `before_prompt` runs first on the interactive path (e.g. checking the stack runs, so nobody types a
    password twice for nothing)."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise MailstackError("no password on standard input (--password-stdin)",
                                 "pipe it in: printf '%s\\n' \"$PASSWORD\" | mailstack ... --password-stdin")
        return password
    if before_prompt is not None:
        before_prompt()
    try:
        return typer.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    except typer.Abort as exc:
        raise MailstackError("no password given", "type it at the prompt, or pipe it in with --password-stdin") from exc


# --- domains, users, aliases, seed ------------------------------------------------------------

@domain_app.command("add")
def domain_add(ctx: typer.Context, name: Annotated[str, typer.Argument(help="e.g. example.test")]) -> None:
    """Add a mail domain (its users and aliases come next)."""
    added = ctx.obj.accounts().add_domain(name)
    report(f"added domain {escape(added)}")


@domain_app.command("list")
def domain_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The mail domains, with their numbers of users and aliases."""
    domains = ctx.obj.accounts().domains()
    if as_json:
        _print_json([d.as_dict() for d in domains])
        return
    out.print(_table("domains", ["domain", "users", "aliases"], [[d.name, d.users, d.aliases] for d in domains]))


@domain_app.command("remove")
def domain_remove(
    ctx: typer.Context, name: str,
    force: Annotated[bool, typer.Option("--force", help="also delete its users and aliases")] = False,
) -> None:
    """Remove a domain. One that still has users or aliases only with --force (they go with it)."""
    removed = ctx.obj.accounts().remove_domain(name, force=force)
    if removed.users:
        accounts_module.forget_cached_logins(ctx.obj.stack())
    extra = f" with {removed.users} user(s) and {removed.aliases} alias row(s)" if removed.users or removed.aliases \
        else ""
    report(f"removed domain {escape(removed.name)}{extra}" + ("; mail files stay on disk" if removed.users else ""))


@user_app.command("add")
def user_add(ctx: typer.Context, address: Annotated[str, typer.Argument(help="e.g. alice@example.test")],
             password_stdin: PasswordStdinOpt = False,
             quota: Annotated[str | None, typer.Option(help="mailbox quota, like 50M or 2G (0: unlimited)")]
             = None) -> None:
    """Add a mailbox user. The password is prompted for (twice), or read with --password-stdin."""
    address = accounts_module.valid_login(address)
    if quota is not None:
        accounts_module.valid_size(quota)
        ctx.obj.flavour().require("quota")
    password = read_password(password_stdin, confirm=True, before_prompt=ctx.obj.running_stack)
    password = accounts_module.valid_password(password)
    added = ctx.obj.accounts().add_user(address, password, quota=quota)
    report(f"added user {escape(added)}")


def _set_active(ctx: typer.Context, address: str, active: bool) -> None:
    changed = ctx.obj.accounts().set_active(address, active)
    accounts_module.forget_cached_logins(ctx.obj.stack(), [changed])
    report(f"{'enabled' if active else 'disabled'} user {escape(changed)}")


@user_app.command("disable")
def user_disable(ctx: typer.Context, address: str) -> None:
    """Disable a mailbox (postfixadmin schema): no mail accepted for it, no login; its data stays."""
    _set_active(ctx, address, False)


@user_app.command("enable")
def user_enable(ctx: typer.Context, address: str) -> None:
    """Enable a disabled mailbox again (postfixadmin schema)."""
    _set_active(ctx, address, True)


@user_app.command("list")
def user_list(ctx: typer.Context,
              domain: Annotated[str | None, typer.Option(help="only this domain's users")] = None,
              as_json: JsonOpt = False) -> None:
    """The mailbox users, their password schemes (never the hashes), quota limits and usage (from Dovecot)."""
    users = ctx.obj.accounts().users(domain)
    if any(u.quota is not None for u in users):
        users = accounts_module.with_quota_usage(ctx.obj.stack(), users)
    if as_json:
        _print_json([u.as_dict() for u in users])
        return
    columns = ["address", "domain", "scheme"]
    has_quota = any(u.quota is not None for u in users)
    has_active = any(u.active is not None for u in users)
    columns += ["quota", "used", "messages"] * has_quota + ["active"] * has_active
    rows = [[u.address, u.domain, u.scheme]
            + [_size(u.quota), _used(u.quota_used, u.quota), "?" if u.messages is None else u.messages] * has_quota
            + [("yes" if u.active else "no")] * has_active for u in users]
    out.print(_table("users", columns, rows))


def _used(used: int | None, limit: int | None) -> str:
    if used is None:
        return "?"
    shown = _size(used) if used else "0"
    return f"{shown} ({used * 100 // limit}%)" if limit else shown


@user_app.command("set-quota")
def user_set_quota(ctx: typer.Context, address: Annotated[str, typer.Argument(help="e.g. alice@example.test")],
                   size: Annotated[str, typer.Argument(help="like 10K, 50M, 2G; 0 or none: unlimited")]) -> None:
    """Set a mailbox's quota. Over it, mail is refused at RCPT (552) before it is accepted."""
    address = accounts_module.valid_login(address)
    size = "0" if size.strip().lower() in ("none", "unlimited") else size
    accounts_module.valid_size(size)
    ctx.obj.flavour().require("quota")
    bytes_ = ctx.obj.accounts().set_quota(address, size)
    # Dovecot caches the userdb answer (its quota_rule); `doveadm auth cache flush USER` reaches only passdb
    # entries, so the whole cache goes (logins are checked afresh once).
    accounts_module.forget_cached_logins(ctx.obj.stack())
    report(f"quota of {escape(address)}: {_size(bytes_)}")


def _size(size: int | None) -> str:
    if not size:
        return "unlimited"
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size % factor == 0:
            return f"{size // factor}{unit}"
    for unit, factor in (("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= factor:
            return f"{size / factor:.1f}{unit}"
    return f"{size} bytes"


@user_app.command("passwd")
def user_passwd(ctx: typer.Context, address: str, password_stdin: PasswordStdinOpt = False) -> None:
    """Set a user's password (prompted for twice, or read with --password-stdin)."""
    address = accounts_module.valid_login(address)
    password = read_password(password_stdin, confirm=True, prompt="New password", before_prompt=ctx.obj.running_stack)
    password = accounts_module.valid_password(password)
    changed = ctx.obj.accounts().set_password(address, password)
    accounts_module.forget_cached_logins(ctx.obj.stack(), [changed])
    report(f"password of {escape(changed)} changed")


@user_app.command("remove")
def user_remove(ctx: typer.Context, address: str) -> None:
    """Remove a user (its mail files stay on disk)."""
    removed = ctx.obj.accounts().remove_user(address)
    accounts_module.forget_cached_logins(ctx.obj.stack(), [removed])
    report(f"removed user {escape(removed)} (mail files stay on disk)")


@alias_app.command("add")
def alias_add(ctx: typer.Context, source: Annotated[str, typer.Argument(help="the alias, in a local domain")],
              destinations: Annotated[list[str], typer.Argument(help="where its mail goes (any addresses)")]) -> None:
    """Add an alias: mail to SOURCE goes to each DESTINATION."""
    added = ctx.obj.accounts().add_alias(source, destinations)
    report(f"alias {escape(source.strip().lower())} -> {escape(', '.join(added))}")


@alias_app.command("list")
def alias_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The aliases and their destinations."""
    aliases = ctx.obj.accounts().aliases()
    if as_json:
        _print_json([{"source": source, "destinations": dests} for source, dests in aliases.items()])
        return
    out.print(_table("aliases", ["alias", "destinations"], [[s, ", ".join(d)] for s, d in aliases.items()]))


@alias_app.command("remove")
def alias_remove(ctx: typer.Context, source: str,
                 destination: Annotated[str | None, typer.Argument(help="only this destination")] = None) -> None:
    """Remove an alias (all its destinations, or only DESTINATION)."""
    removed = ctx.obj.accounts().remove_alias(source, destination)
    report(f"removed {removed} alias row(s) of {escape(source.strip().lower())}")


@alias_domain_app.command("add")
def alias_domain_add(ctx: typer.Context,
                     alias: Annotated[str, typer.Argument(help="the alias domain (a local domain)")],
                     target: Annotated[str, typer.Argument(help="the domain its mail goes to")]) -> None:
    """Mail to anyone@ALIAS goes to anyone@TARGET (a mailbox or alias there; else TARGET's catch-all; else 550)."""
    ctx.obj.flavour().require("alias_domains")
    added, to = ctx.obj.accounts().add_alias_domain(alias, target)
    report(f"alias domain {escape(added)} -> {escape(to)}")


@alias_domain_app.command("list")
def alias_domain_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The alias domains and their target domains."""
    ctx.obj.flavour().require("alias_domains")
    found = ctx.obj.accounts().alias_domains()
    if as_json:
        _print_json([{"alias": alias, "target": target} for alias, target in found.items()])
        return
    out.print(_table("alias domains", ["alias domain", "target"], [[a, t] for a, t in found.items()]))


# --- Sieve filters ----------------------------------------------------------------------------

ScriptNameOpt = Annotated[str | None, typer.Option("--name", help="a script by name (default: the active one)")]


def _read_script(file: Path) -> tuple[bytes, str]:
    if str(file) == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    try:
        return file.read_bytes(), str(file)
    except OSError as exc:
        raise MailstackError(f"cannot read {file}: {exc.strerror}", "give the path of a Sieve script") from exc


@sieve_app.command("set")
def sieve_set(ctx: typer.Context, address: Annotated[str, typer.Argument(help="the user, e.g. alice@example.test")],
              file: Annotated[Path, typer.Argument(help="the Sieve script (- reads standard input)")],
              name: Annotated[str, typer.Option("--name", help="the script's name")] = sieve_module.SCRIPT_NAME,
              ) -> None:
    """Store a Sieve script for ADDRESS and make it the active one. A script with an error is refused with
    Sieve's message (FILE: line N: ...); the active script then stays active."""
    address = accounts_module.valid_login(address)
    script, source = _read_script(file)
    sieve_module.Sieve(ctx.obj.running_stack()).set(address, script, sieve_module.check_name(name), source=source)
    report(f"Sieve script {escape(name)} of {escape(address)} stored and active")


@sieve_app.command("get")
def sieve_get(ctx: typer.Context, address: str, name: ScriptNameOpt = None) -> None:
    """Print ADDRESS's active Sieve script (or the one named)."""
    address = accounts_module.valid_login(address)
    sys.stdout.write(sieve_module.Sieve(ctx.obj.running_stack()).get(address, name))
    sys.stdout.flush()


@sieve_app.command("list")
def sieve_list(ctx: typer.Context, address: str, as_json: JsonOpt = False) -> None:
    """ADDRESS's Sieve scripts (also those stored over ManageSieve) and which one is active."""
    address = accounts_module.valid_login(address)
    scripts = sieve_module.Sieve(ctx.obj.running_stack()).scripts(address)
    if as_json:
        _print_json([script.as_dict() for script in scripts])
        return
    out.print(_table(f"Sieve scripts of {address}", ["name", "active"],
                     [[script.name, "yes" if script.active else "no"] for script in scripts]))


@sieve_app.command("remove")
def sieve_remove(ctx: typer.Context, address: str, name: ScriptNameOpt = None) -> None:
    """Delete ADDRESS's active Sieve script (or the one named): mail then goes to INBOX unfiltered."""
    address = accounts_module.valid_login(address)
    removed = sieve_module.Sieve(ctx.obj.running_stack()).remove(address, name)
    report(f"removed Sieve script {escape(removed)} of {escape(address)}")


@alias_domain_app.command("remove")
def alias_domain_remove(ctx: typer.Context,
                        alias: Annotated[str, typer.Argument(help="the alias domain")]) -> None:
    """Stop rewriting mail to ALIAS (it stays a local domain: `domain remove` removes it)."""
    ctx.obj.flavour().require("alias_domains")
    removed = ctx.obj.accounts().remove_alias_domain(alias)
    report(f"removed alias domain {escape(removed)}")


@catch_all_app.command("set")
def catch_all_set(ctx: typer.Context, domain: Annotated[str, typer.Argument(help="a local domain")],
                  destinations: Annotated[list[str], typer.Argument(help="where its unknown addresses' mail goes")]
                  ) -> None:
    """Mail to an address of DOMAIN with no mailbox or alias goes to each DESTINATION (replacing the old ones).
    Real mailboxes keep their mail; it is the alias @DOMAIN."""
    domain = accounts_module.valid_domain(domain)
    wanted = ctx.obj.accounts().set_catch_all(domain, destinations)
    report(f"catch-all @{escape(domain)} -> {escape(', '.join(wanted))}")


@catch_all_app.command("list")
def catch_all_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The domains with a catch-all and its destinations."""
    found = ctx.obj.accounts().catch_alls()
    if as_json:
        _print_json([{"domain": domain, "destinations": dests} for domain, dests in found.items()])
        return
    out.print(_table("catch-alls", ["domain", "destinations"], [[d, ", ".join(t)] for d, t in found.items()]))


@catch_all_app.command("remove")
def catch_all_remove(ctx: typer.Context, domain: Annotated[str, typer.Argument(help="a local domain")]) -> None:
    """Remove DOMAIN's catch-all: its unknown addresses are refused again (550)."""
    removed = ctx.obj.accounts().remove_catch_all(domain)
    report(f"removed the catch-all of {escape(removed)}")


@app.command()
def seed(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="seed file (YAML), like examples/seed.yaml")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only print what would change")] = False,
) -> None:
    """Apply a seed file in one transaction: adds and updates, never deletes. All or nothing."""
    from mailstack.seed import load as load_seed
    from mailstack.seed import seed_database, sieve_scripts

    parsed = load_seed(file)  # file:line errors before anything is touched
    settings: Settings = ctx.obj.settings
    scripts = sieve_scripts(parsed)
    if scripts:  # compiled by Sieve before anything is touched
        checker = sieve_module.Sieve(ctx.obj.running_stack())
        for address, text in scripts:
            checker.check(text, f"{file}: sieve of {address}")
    changes: list[object] = list(seed_database(ctx.obj.database(), parsed, settings.password_scheme,
                                               settings.hash_cost, dry_run=dry_run))
    if dry_run:
        changes += [f"set sieve {address}" for address, _ in scripts]
    elif scripts:
        changes += [f"set sieve {address}" for address in sieve_module.set_many(ctx.obj.stack(), scripts)]
    if not changes:
        report(f"{escape(str(file))}: nothing to change")
        return
    for change in changes:
        out.print(Text(("would " if dry_run else "") + str(change)))
    report(f"{len(changes)} change(s) " + ("planned; nothing was changed (--dry-run)" if dry_run else "applied"))


# --- diagnosing -------------------------------------------------------------------------------

_STATUS_STYLE = {"ok": "green", "fail": "bold red", "skip": "yellow"}


# --- snapshots --------------------------------------------------------------------------------

SnapshotName = Annotated[str, typer.Argument(help="[a-z0-9][a-z0-9._-]*, e.g. before-migration")]


def _snapshot_row(info: snapshots.SnapshotInfo) -> list[object]:
    size = f"{info.size / 1e6:.1f} MB" if info.size >= 100_000 else f"{info.size / 1e3:.0f} kB"
    return [info.name, info.created, size, info.flavour, ", ".join(info.parts)]


@snapshot_app.command("save")
def snapshot_save(ctx: typer.Context, name: SnapshotName,
                  force: Annotated[bool, typer.Option("--force", help="replace a snapshot of that name")] = False,
                  as_json: JsonOpt = False) -> None:
    """Save the database, the maildirs and Postfix's queue (into the state directory, owner-only)."""
    info = snapshots.save(ctx.obj.running_stack(), name, force=force, report=report)
    if as_json:
        _print_json(info.as_dict())


@snapshot_app.command("restore")
def snapshot_restore(ctx: typer.Context, name: SnapshotName) -> None:
    """Make the running stack what it was at `save`: users, mail and queue entries added since are gone.
    Open IMAP and POP3 sessions are closed; Postfix is reloaded."""
    snapshots.restore(ctx.obj.running_stack(), name, report=report)


@snapshot_app.command("list")
def snapshot_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """The snapshots: name, created, size, schema flavour."""
    found = snapshots.list_snapshots(ctx.obj.stack())
    if as_json:
        _print_json([info.as_dict() for info in found])
        return
    out.print(_table("snapshots", ["name", "created", "size", "flavour", "parts"],
                     [_snapshot_row(info) for info in found]))


@snapshot_app.command("delete")
def snapshot_delete(ctx: typer.Context, name: SnapshotName) -> None:
    """Delete a snapshot."""
    snapshots.delete(ctx.obj.stack(), name)
    report(f"deleted snapshot {escape(name)}")


@app.command("doctor")
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
        _print_json({"ok": not failed, "checks": [result.as_dict() for result in results]})
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


@app.command("chroot-sync")
def chroot_sync(ctx: typer.Context) -> None:
    """Copy resolv.conf, hosts, ... into Postfix's chroot again (Debian's script) and reload Postfix."""
    stack = ctx.obj.running_stack()
    chroot.sync(stack)
    problems = chroot.problems(stack)
    if problems:
        raise MailstackError(f"still different after the sync: {'; '.join(map(str, problems))}",
                             "`mailstack logs postfix`")
    report(f"{chroot.QUEUE_DIRECTORY}/etc matches /etc again; Postfix reloaded")


@app.command("trace")
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
        _print_json(found.as_dict())
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


# --- a mail client's view ---------------------------------------------------------------------

@app.command()
def send(
    ctx: typer.Context,
    sender: Annotated[str, typer.Option("--from", help="the user to log in and send as")],
    to: Annotated[list[str], typer.Option("--to", help="recipient (repeat for more)")],
    subject: Annotated[str, typer.Option(help="subject line")] = "mailstack test",
    body: Annotated[str, typer.Option(help="message text")] = "A test message sent by `mailstack send`.",
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Send a test message through submission (587: STARTTLS, then AUTH as --from)."""
    sender = accounts_module.valid_login(sender)
    recipients = [accounts_module.valid_address(address) for address in to]
    password = read_password(password_stdin, confirm=False, prompt=f"Password for {sender}",
                             before_prompt=ctx.obj.running_stack)
    stack = ctx.obj.running_stack()
    sent = client.send(stack.endpoints().submission, ctx.obj.settings.ca_cert, sender, password, recipients,
                       subject=subject, body=body)
    out.print(Text(f"sent {sent.message_id} to {', '.join(sent.recipients)}"
                   + (f"; queue id {sent.queue_id}" if sent.queue_id else "")), soft_wrap=True)
    report(f"follow it: mailstack trace {escape(sent.queue_id or sent.message_id)}")


@app.command()
def inbox(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="the mailbox to read (logs in as it)")],
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, max=1000, help="how many messages")] = 10,
    folder: Annotated[str, typer.Option(help="IMAP folder")] = "INBOX",
    password_stdin: PasswordStdinOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """The newest messages of a mailbox over IMAPS: date, from, subject (read-only)."""
    address = accounts_module.valid_login(address)
    password = read_password(password_stdin, confirm=False, prompt=f"Password for {address}",
                             before_prompt=ctx.obj.running_stack)
    stack = ctx.obj.running_stack()
    messages = client.inbox(stack.endpoints().imaps, ctx.obj.settings.ca_cert, address, password,
                            limit=limit, folder=folder)
    if as_json:
        _print_json([message.as_dict() for message in messages])
        return
    out.print(_table(f"{address} {folder} (newest first)", ["date", "from", "subject"],
                     [[m.date, m.sender, m.subject] for m in messages]))


@app.command("client-config")
def client_config(ctx: typer.Context, address: str, as_json: JsonOpt = False) -> None:
    """The settings to type into Thunderbird, Outlook or a phone for ADDRESS."""
    address = accounts_module.valid_login(address)
    stack = ctx.obj.running_stack()
    if not ctx.obj.accounts().user_exists(address):
        raise MailstackError(f"no user {address}", f"`mailstack user add {address}` creates it")
    config = client.client_config(ctx.obj.settings, stack.endpoints(), address)
    if as_json:
        _print_json(config)
        return
    rows = [[f"{s['protocol']} ({direction})", s["server"], s["port"], s["security"]]
            for direction in ("incoming", "outgoing") for s in config[direction]]  # type: ignore[attr-defined]
    out.print(_table(f"mail client settings for {address}", ["server type", "server", "port", "security"], rows))
    out.print(Text(f"username: {config['username']} (the full address), authentication: normal password"),
              soft_wrap=True)
    out.print(Text(f"CA file to trust: {config['ca_cert']}"), soft_wrap=True)
    for note in config["notes"]:  # type: ignore[attr-defined]
        out.print(Text(f"- {note}"), soft_wrap=True)


# --- queue ---------------------------------------------------------------------------------------

QueueIdsArg = Annotated[list[str] | None, typer.Argument(help="queue ids (`mailstack queue list`)")]
AllOpt = Annotated[bool, typer.Option("--all", help="every message in the queue")]


def _queue(ctx: typer.Context) -> queue_module.Queue:
    stack = ctx.obj.stack()
    stack.require_running(["postfix"])  # the queue is Postfix's: it is there to see while Dovecot is down
    return queue_module.Queue(stack)


@queue_app.command("list")
def queue_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """What is in Postfix's queue (postqueue -j): id, queue, size, sender, recipients and why it waits."""
    entries = _queue(ctx).entries()
    if as_json:
        _print_json([entry.as_dict() for entry in entries])
        return
    rows = [[e.queue_id, e.queue_name, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.arrival_time)),
             e.message_size, e.sender or "<>", ", ".join(r.address for r in e.recipients),
             "; ".join(sorted({r.delay_reason for r in e.recipients if r.delay_reason}))] for e in entries]
    out.print(_table(f"queue: {len(entries)} message(s)", ["id", "queue", "arrived", "bytes", "sender",
                                                            "recipients", "why it waits"], rows))


@queue_app.command("show")
def queue_show(ctx: typer.Context, queue_id: str) -> None:
    """One queued message as postcat shows it: envelope, headers, body."""
    sys.stdout.write(_queue(ctx).show(queue_id))


@queue_app.command("flush")
def queue_flush(ctx: typer.Context) -> None:
    """Try every deferred message again now (postqueue -f)."""
    _queue(ctx).flush()
    report("flushed: Postfix is delivering what it can")


def _queue_action(action: str, done: str) -> Callable[..., None]:
    def command(ctx: typer.Context, queue_ids: QueueIdsArg = None, everything: AllOpt = False) -> None:
        count = _queue(ctx).act(action, queue_ids or [], everything)
        report(f"{done}: {count} message(s)")
    command.__doc__ = f"{action.capitalize()} queued messages (postsuper): the given ids, or --all."
    return command


queue_app.command("hold")(_queue_action("hold", "placed on hold"))
queue_app.command("release")(_queue_action("release", "released from hold"))
queue_app.command("delete")(_queue_action("delete", "deleted"))
queue_app.command("requeue")(_queue_action("requeue", "requeued"))


def main() -> None:
    try:
        app()
    except MailstackError as exc:
        show_error(exc)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
