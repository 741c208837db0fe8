"""Domains, users and aliases: every input validated before the database is touched, then one
transaction per operation (a refused operation changes nothing)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Any

from mailstack import passwords, webmail
from mailstack.db import Database
from mailstack.errors import MailstackError
from mailstack.schema import DEFAULT, Flavour, domain_of
from mailstack.seed import (
    check_address,
    check_alias_source,
    check_domain,
    check_fits,
    check_login_address,
    check_password,
    check_size,
)
from mailstack.stack import Stack

ADDRESS_HINT = "an address looks like alice@example.test"


def valid_domain(value: str) -> str:
    return _valid(check_domain, value, "domain", "a domain looks like example.test")


def valid_address(value: str) -> str:
    return _valid(check_address, value, "address", ADDRESS_HINT)


def valid_login(value: str) -> str:
    """A mailbox address, which must also be a valid Dovecot login."""
    return _valid(check_login_address, value, "address", ADDRESS_HINT)


def valid_password(value: str) -> str:
    if not value:
        raise MailstackError("invalid password: it is empty", _password_hint())
    return _valid(check_password, value, "password", _password_hint())


def valid_size(value: str | int) -> int:
    return _valid(check_size, value, "quota", "a quota looks like 10K, 50M, 2G or a number of bytes (0: unlimited)")


def _password_hint() -> str:
    return f"choose a password of at least {passwords.MIN_PASSWORD_LENGTH} characters; nothing was changed"


def _valid(check: Callable[[Any], Any], value: Any, what: str, hint: str) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        reason = str(exc)
        if reason.startswith(what):  # "password too short ..."
            message = reason
        elif isinstance(value, str) and repr(value.strip().lower()) in reason:  # the validator already quotes the value
            message = f"invalid {what}: {reason}"
        else:
            message = f"invalid {what} {value!r}: {reason}"
        raise MailstackError(message, hint) from exc


@dataclass(frozen=True)
class DomainInfo:
    name: str
    users: int
    aliases: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class UserInfo:
    address: str
    domain: str
    scheme: str
    quota: int | None = None  # bytes, 0 = unlimited; None: the flavour has no quotas
    active: bool | None = None  # None: the flavour has no active flag
    quota_used: int | None = None  # bytes stored, as Dovecot's quota counts them; None: not asked / unknown
    messages: int | None = None  # messages stored (Dovecot's quota count); None: not asked / unknown

    def as_dict(self) -> dict[str, object]:
        return {key: value for key, value in asdict(self).items() if value is not None}


class Accounts:
    """The operations behind `mailstack domain|user|alias`. `database` is called only once the input
    is known to be valid (resolving it needs the running stack)."""

    def __init__(self, database: Callable[[], Database], scheme: passwords.Scheme = "ARGON2ID",
                 cost: passwords.Cost = "production", flavour: Flavour = DEFAULT,
                 domains_changed: Callable[[list[str]], None] | None = None) -> None:
        """domains_changed: called with every local domain after one was added or removed (the world's DNS
        records and DKIM keys follow them)."""
        self._database = database
        self.scheme = scheme
        self.cost = cost
        self.flavour = flavour
        self.domains_changed = domains_changed

    def _after_domain_change(self) -> None:
        if self.domains_changed is not None:
            with self._database().transaction() as store:
                domains = store.domains()
            self.domains_changed(domains)

    def _fits(self, what: str, value: str) -> str:
        return check_fits(self.flavour, what, value)

    # --- domains ------------------------------------------------------------------------------

    def domains(self) -> list[DomainInfo]:
        with self._database().transaction() as store:
            return [DomainInfo(name, users, aliases) for name, (users, aliases) in store.domain_usage().items()]

    def add_domain(self, name: str) -> str:
        name = self._fits("domain", valid_domain(name))
        with self._database().transaction() as store:
            if name in store.domains():
                raise MailstackError(f"domain {name} already exists", "`mailstack domain list` shows the domains")
            store.add_domain(name)
        self._after_domain_change()
        return name

    def remove_domain(self, name: str, force: bool = False) -> DomainInfo:
        """Remove a domain; with users or aliases only when forced (they are deleted with it)."""
        name = valid_domain(name)
        with self._database().transaction() as store:
            usage = store.domain_usage()
            if name not in usage:
                raise MailstackError(f"no domain {name}", "`mailstack domain list` shows the domains")
            users, aliases = usage[name]
            if (users or aliases) and not force:
                raise MailstackError(
                    f"domain {name} still has {_count(users, 'user')} and {_count(aliases, 'alias')}",
                    f"remove them first, or `mailstack domain remove {name} --force` deletes them with it; "
                    "nothing was changed",
                )
            store.remove_domain(name)
        self._after_domain_change()
        return DomainInfo(name, users, aliases)

    # --- users --------------------------------------------------------------------------------

    def users(self, domain: str | None = None) -> list[UserInfo]:
        domain = valid_domain(domain) if domain is not None else None
        with self._database().transaction() as store:
            rows = store.user_rows()
        found = []
        for row in rows:
            if domain is not None and domain_of(row.address) != domain:
                continue
            parts = passwords.split_scheme(row.password)
            scheme = parts[0] if parts else f"{passwords.crypt_scheme(row.password) or 'unknown'} (unprefixed)"
            found.append(UserInfo(row.address, domain_of(row.address), scheme, row.quota, row.active))
        return found

    def user_exists(self, address: str) -> bool:
        address = valid_login(address)
        with self._database().transaction() as store:
            return store.password_hash(address) is not None

    def add_user(self, address: str, password: str, quota: str | int | None = None, active: bool = True) -> str:
        address = self._fits("address", valid_login(address))
        size = valid_size(quota) if quota is not None else None
        if size is not None:
            self.flavour.require("quota")
        if not active:
            self.flavour.require("active")
        hashed = self._fits("password_hash", passwords.hash_password(valid_password(password), self.scheme, self.cost))
        domain = domain_of(address)
        with self._database().transaction() as store:
            if domain not in store.domains():
                raise MailstackError(f"cannot add {address}: {domain} is not a local domain",
                                     f"add it first: `mailstack domain add {domain}`; nothing was changed")
            if store.password_hash(address) is not None:
                raise MailstackError(f"user {address} already exists",
                                     f"`mailstack user passwd {address}` sets a new password; nothing was changed")
            store.add_user(address, hashed, quota=size, active=active)
        return address

    def set_active(self, address: str, active: bool) -> str:
        """Enable or disable a mailbox (flavours with an active column): a disabled one gets no mail and
        cannot log in."""
        address = valid_login(address)
        self.flavour.require("active")
        with self._database().transaction() as store:
            if store.password_hash(address) is None:
                raise MailstackError(f"no user {address}", "`mailstack user list` shows the users")
            store.set_active(address, active)
        return address

    def set_quota(self, address: str, quota: str | int) -> int:
        address = valid_login(address)
        size = valid_size(quota)
        self.flavour.require("quota")
        with self._database().transaction() as store:
            if not store.set_quota(address, size) and store.password_hash(address) is None:
                raise MailstackError(f"no user {address}", "`mailstack user list` shows the users")
        return size

    def set_password(self, address: str, password: str) -> str:
        address = valid_login(address)
        hashed = passwords.hash_password(valid_password(password), self.scheme, self.cost)
        with self._database().transaction() as store:
            if store.password_hash(address) is None:
                raise MailstackError(f"no user {address}", "`mailstack user list` shows the users")
            store.set_password(address, hashed)
        return address

    def remove_user(self, address: str) -> str:
        address = valid_login(address)
        with self._database().transaction() as store:
            if not store.remove_user(address):
                raise MailstackError(f"no user {address}", "`mailstack user list` shows the users")
        return address

    # --- aliases ------------------------------------------------------------------------------

    def aliases(self) -> dict[str, list[str]]:
        with self._database().transaction() as store:
            return store.aliases()

    def add_alias(self, source: str, destinations: Iterable[str]) -> list[str]:
        """Add source -> destinations (destinations may be anywhere). Returns the destinations added."""
        source = self._fits("address", _valid(check_alias_source, source, "address",
                                              f"{ADDRESS_HINT}, a catch-all like @example.test"))
        wanted = list(dict.fromkeys(self._fits("address", valid_address(d)) for d in destinations))
        if not wanted:
            raise MailstackError("an alias needs at least one destination",
                                 "e.g. `mailstack alias add team@example.test alice@example.test`")
        domain = domain_of(source)
        with self._database().transaction() as store:
            if domain not in store.domains():
                raise MailstackError(f"cannot add alias {source}: {domain} is not a local domain",
                                     f"add it first: `mailstack domain add {domain}`; nothing was changed")
            existing = store.aliases().get(source, [])
            new = [d for d in wanted if d not in existing]
            if not new:
                raise MailstackError(f"alias {source} -> {', '.join(wanted)} already exists",
                                     "`mailstack alias list` shows the aliases")
            store.add_alias(source, new)
        return new

    def remove_alias(self, source: str, destination: str | None = None) -> int:
        """Remove an alias (all its destinations, or one). Returns the number of rows removed."""
        source = _valid(check_alias_source, source, "address", ADDRESS_HINT)
        destination = valid_address(destination) if destination is not None else None
        with self._database().transaction() as store:
            removed = store.remove_alias(source, destination)
            if not removed:
                what = f"{source} -> {destination}" if destination else source
                raise MailstackError(f"no alias {what}", "`mailstack alias list` shows the aliases")
        return removed


    # --- alias domains ------------------------------------------------------------------------

    def alias_domains(self) -> dict[str, str]:
        self.flavour.require("alias_domains")
        with self._database().transaction() as store:
            return store.alias_domains()

    def add_alias_domain(self, alias: str, target: str) -> tuple[str, str]:
        """Mail to anyone@ALIAS goes to anyone@TARGET. Both must be local domains (as in PostfixAdmin)."""
        alias, target = valid_domain(alias), valid_domain(target)
        self.flavour.require("alias_domains")
        if alias == target:
            raise MailstackError(f"alias domain {alias} cannot point to itself", "give another target domain")
        with self._database().transaction() as store:
            domains = store.domains()
            for domain in (alias, target):
                if domain not in domains:
                    raise MailstackError(f"{domain} is not a local domain",
                                         f"add it first: `mailstack domain add {domain}`; nothing was changed")
            existing = store.alias_domains()
            if alias in existing:
                raise MailstackError(f"alias domain {alias} -> {existing[alias]} already exists",
                                     "`mailstack alias-domain list` shows the alias domains")
            if alias in existing.values():
                raise MailstackError(f"{alias} is the target of alias domain(s) "
                                     f"{', '.join(a for a, t in existing.items() if t == alias)}",
                                     "an alias domain points to a domain with mailboxes, not to another alias "
                                     "domain; nothing was changed")
            if target in existing:
                raise MailstackError(f"{target} is itself an alias domain (of {existing[target]})",
                                     f"point {alias} to {existing[target]} instead; nothing was changed")
            store.add_alias_domain(alias, target)
        return alias, target

    def remove_alias_domain(self, alias: str) -> str:
        """Mail to ALIAS is no longer rewritten (the domain itself stays a local domain)."""
        alias = valid_domain(alias)
        self.flavour.require("alias_domains")
        with self._database().transaction() as store:
            if not store.remove_alias_domain(alias):
                raise MailstackError(f"no alias domain {alias}",
                                     "`mailstack alias-domain list` shows the alias domains")
        return alias

    # --- catch-alls ---------------------------------------------------------------------------

    def catch_alls(self) -> dict[str, list[str]]:
        with self._database().transaction() as store:
            return store.catch_alls()

    def set_catch_all(self, domain: str, destinations: Iterable[str]) -> list[str]:
        """Mail to any address of DOMAIN that is no mailbox or alias goes to DESTINATIONS (replacing the
        domain's catch-all destinations, if it had some). Real mailboxes keep their mail."""
        domain = self._fits("domain", valid_domain(domain))
        wanted = list(dict.fromkeys(self._fits("address", valid_address(d)) for d in destinations))
        if not wanted:
            raise MailstackError("a catch-all needs at least one destination",
                                 f"e.g. `mailstack catch-all set {domain} postmaster@{domain}`")
        with self._database().transaction() as store:
            if domain not in store.domains():
                raise MailstackError(f"{domain} is not a local domain",
                                     f"add it first: `mailstack domain add {domain}`; nothing was changed")
            store.set_catch_all(domain, wanted)
        return wanted

    def remove_catch_all(self, domain: str) -> str:
        domain = valid_domain(domain)
        with self._database().transaction() as store:
            if not store.remove_alias(f"@{domain}"):
                raise MailstackError(f"{domain} has no catch-all", "`mailstack catch-all list` shows them")
        return domain


def with_quota_usage(stack: Stack, users: list[UserInfo]) -> list[UserInfo]:
    """The users with what Dovecot counts against their quotas (bytes and messages): one
    `doveadm quota get -u` for one user, one `-A` (every user Dovecot iterates) for more."""
    if not users:
        return users
    argv = ["doveadm", "-f", "tab", "quota", "get"]
    argv += ["-u", users[0].address] if len(users) == 1 else ["-A"]
    try:
        result = stack.exec("dovecot", argv, check=False)
    except MailstackError:
        return users  # Dovecot is not running: the listing is the database's, usage unknown ("?")
    if result.returncode != 0:  # e.g. a stack without the quota plugin (mailbox_features off)
        return users
    usage = parse_quota_usage(result.stdout.decode(errors="replace"), users[0].address if len(users) == 1 else None)
    return [replace(user, quota_used=usage.get(user.address, (None, None))[0],
                    messages=usage.get(user.address, (None, None))[1]) for user in users]


def parse_quota_usage(output: str, user: str | None = None) -> dict[str, tuple[int, int]]:
    """`doveadm -f tab quota get` (with a Username column for -A): address -> (bytes, messages). Dovecot
    gives STORAGE in KiB."""
    lines = [line.split("\t") for line in output.splitlines() if line.strip()]
    if not lines:
        return {}
    header = [name.strip().lower() for name in lines[0]]
    column = {name: index for index, name in enumerate(header)}
    if not {"type", "value"} <= column.keys():
        return {}
    found: dict[str, list[int]] = {}
    for fields in lines[1:]:
        address = fields[column["username"]] if "username" in column else user
        if address is None or len(fields) < len(header) or not fields[column["value"]].strip().isdigit():
            continue
        value = int(fields[column["value"]])
        kind = fields[column["type"]].strip().upper()
        entry = found.setdefault(address.lower(), [0, 0])
        if kind == "STORAGE":
            entry[0] += value * 1024
        elif kind == "MESSAGE":
            entry[1] += value
    return {address: (entry[0], entry[1]) for address, entry in found.items()}


def publish_local_domains(stack: Stack, database: Database) -> None:
    """Every local domain in the database now, published where the stack's optional parts show them: DNS
    records and DKIM keys (a world), the autoconfiguration's domain list (a webmail)."""
    if stack.publishes_domains:
        with database.transaction() as store:
            domains = store.domains()
        publish_domains(stack, domains)


def publish_domains(stack: Stack, domains: Iterable[str]) -> None:
    domains = list(domains)
    if stack.network is not None:
        stack.sync_world(domains)
    if stack.settings.webmail:
        webmail.render(stack.settings, domains)


def forget_cached_logins(stack: Stack, addresses: Iterable[str] = ()) -> None:
    """Dovecot caches successful logins for an hour (auth_cache_ttl): without a flush a changed or removed
    password keeps working until then. No addresses: flush everything."""
    stack.exec("dovecot", ["doveadm", "auth", "cache", "flush", *addresses])


def _count(number: int, noun: str) -> str:
    plural = "aliases" if noun == "alias" else f"{noun}s"
    return f"{number} {noun if number == 1 else plural}"
