"""Accounts: domains, users, aliases, alias domains, catch-alls, and seed files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from mailstack import accounts as accounts_module
from mailstack import sieve as sieve_module
from mailstack.cli.common import JsonOpt, PasswordStdinOpt, out, print_json, read_password, report, table
from mailstack.settings import Settings

domain_app = typer.Typer(help="Mail domains: add, list, remove.", no_args_is_help=True)
user_app = typer.Typer(help="Mailbox users: add, list, passwd, set-quota, remove.", no_args_is_help=True)
alias_app = typer.Typer(help="Aliases (forwardings): add, list, remove.", no_args_is_help=True)
alias_domain_app = typer.Typer(help="Alias domains (anyone@ALIAS gets anyone@TARGET's mail): add, list, remove.",
                               no_args_is_help=True)
catch_all_app = typer.Typer(help="Catch-alls (mail to unknown addresses of a domain): set, list, remove.",
                            no_args_is_help=True)


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
        print_json([d.as_dict() for d in domains])
        return
    out.print(table("domains", ["domain", "users", "aliases"], [[d.name, d.users, d.aliases] for d in domains]))


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
        print_json([u.as_dict() for u in users])
        return
    columns = ["address", "domain", "scheme"]
    has_quota = any(u.quota is not None for u in users)
    has_active = any(u.active is not None for u in users)
    columns += ["quota", "used", "messages"] * has_quota + ["active"] * has_active
    rows = [[u.address, u.domain, u.scheme]
            + [_size(u.quota), _used(u.quota_used, u.quota), "?" if u.messages is None else u.messages] * has_quota
            + [("yes" if u.active else "no")] * has_active for u in users]
    out.print(table("users", columns, rows))


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
        print_json([{"source": source, "destinations": dests} for source, dests in aliases.items()])
        return
    out.print(table("aliases", ["alias", "destinations"], [[s, ", ".join(d)] for s, d in aliases.items()]))


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
        print_json([{"alias": alias, "target": target} for alias, target in found.items()])
        return
    out.print(table("alias domains", ["alias domain", "target"], [[a, t] for a, t in found.items()]))


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
        print_json([{"domain": domain, "destinations": dests} for domain, dests in found.items()])
        return
    out.print(table("catch-alls", ["domain", "destinations"], [[d, ", ".join(t)] for d, t in found.items()]))


@catch_all_app.command("remove")
def catch_all_remove(ctx: typer.Context, domain: Annotated[str, typer.Argument(help="a local domain")]) -> None:
    """Remove DOMAIN's catch-all: its unknown addresses are refused again (550)."""
    removed = ctx.obj.accounts().remove_catch_all(domain)
    report(f"removed the catch-all of {escape(removed)}")


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
    if changes and not dry_run:
        accounts_module.publish_local_domains(ctx.obj.stack(), ctx.obj.database())
    if not changes:
        report(f"{escape(str(file))}: nothing to change")
        return
    for change in changes:
        out.print(Text(("would " if dry_run else "") + str(change)))
    report(f"{len(changes)} change(s) " + ("planned; nothing was changed (--dry-run)" if dry_run else "applied"))
