"""Declarative seed files: YAML -> validated model -> a plan of changes -> one transaction.

Seeding adds and updates; it never deletes what the file does not mention. A file with any error
changes nothing: it is validated before the database is touched, and applied in one transaction.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import pymysql.err
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from mailstack import passwords
from mailstack.db import Database
from mailstack.errors import MailstackError
from mailstack.schema import PASSWORD_HASH_MAX, Flavour, Store, domain_of

# A practical address grammar: what Postfix, Dovecot's auth_username_chars and our SQL all accept.
_LOCAL = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_DOMAIN = r"(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}"
_DOVECOT_LOGIN_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789.-_@'+")


def shown(value: object, limit: int = 60) -> str:
    """A value as an error message quotes it: repr, cut short when long (a 1 MB address stays one line)."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:limit - 3]}...{text[-1]}{size}"


def check_domain(value: str) -> str:
    value = value.strip().lower()
    if not re.fullmatch(_DOMAIN, value):
        raise ValueError(f"{shown(value)} is not a domain name (like example.test)")
    return value


def check_address(value: str) -> str:
    value = value.strip().lower()
    if len(value) > 254 or "@" not in value:
        raise ValueError(f"{shown(value)} is not an e-mail address (like alice@example.test)")
    local, domain = value.rsplit("@", 1)
    if len(local) > 64 or not re.fullmatch(_LOCAL, local):
        raise ValueError(f"{shown(value)} has an invalid local part")
    check_domain(domain)
    return value


def check_alias_source(value: str) -> str:
    """An alias's address, or a catch-all: @domain (mail to any address of the domain without one of its own)."""
    value = value.strip().lower()
    return "@" + check_domain(value[1:]) if value.startswith("@") else check_address(value)


def check_login_address(value: str) -> str:
    """A mailbox address must also be a valid Dovecot login (auth_username_chars)."""
    value = check_address(value)
    bad = sorted(set(value) - _DOVECOT_LOGIN_CHARS)
    if bad:
        raise ValueError(f"{shown(value)}: a mailbox login cannot contain {''.join(bad)!r}")
    return value


def check_password(value: str) -> str:
    if len(value) < passwords.MIN_PASSWORD_LENGTH:
        raise ValueError(f"password too short (at least {passwords.MIN_PASSWORD_LENGTH} characters)")
    if len(value) > 1024:
        raise ValueError("password too long (at most 1024 characters)")
    return value


def check_hash(value: str) -> str:
    if len(value) > PASSWORD_HASH_MAX:
        raise ValueError(f"password_hash too long ({len(value)} characters, at most {PASSWORD_HASH_MAX})")
    if not passwords.is_dovecot_hash(value):
        raise ValueError("password_hash must be '{SCHEME}hash' with a scheme Dovecot knows (e.g. {ARGON2ID}...), "
                         "or an unprefixed crypt-style hash ($1$..., $6$..., $2y$...)")
    return value


_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def check_size(value: object) -> int:
    """A quota: bytes, or a number with K, M, G or T (powers of 1024), like 50M. 0 means unlimited."""
    if isinstance(value, bool):
        raise ValueError(f"{shown(value)} is not a size (like 50M, 2G or a number of bytes)")
    if isinstance(value, int):
        size = value
    else:
        match = re.fullmatch(r"(\d+)\s*([KMGT]?)B?", str(value).strip().upper())
        if not match:
            raise ValueError(f"{shown(value)} is not a size (like 10K, 50M, 2G or a number of bytes)")
        size = int(match[1]) * _SIZE_UNITS[match[2]]
    if size < 0 or size > 2**63 - 1:
        raise ValueError(f"size {shown(value)} out of range")
    return size


def check_fits(flavour: Flavour, what: str, value: str) -> str:
    """Refuse a value wider than the flavour's column (MariaDB's strict mode would refuse the row)."""
    limit = {"domain": flavour.limits.domain, "address": flavour.limits.address,
             "password_hash": flavour.limits.password}[what]
    if len(value) > limit:
        raise MailstackError(f"{what} {shown(value)} is {len(value)} characters; the {flavour.name} schema's "
                             f"column holds at most {limit}", "choose a shorter one; nothing was changed")
    return value


Domain = Annotated[str, AfterValidator(check_domain)]
Address = Annotated[str, AfterValidator(check_address)]
LoginAddress = Annotated[str, AfterValidator(check_login_address)]
Password = Annotated[str, AfterValidator(check_password)]
PasswordHash = Annotated[str, AfterValidator(check_hash)]
Size = Annotated[int | str, AfterValidator(check_size)]


class UserSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    address: LoginAddress
    password: Password | None = None
    password_hash: PasswordHash | None = None
    quota: Size | None = None  # bytes after validation (flavours with a quota column)
    active: bool | None = None  # flavours with an active column; None: leave as it is (new users: active)
    sieve: str | None = None  # the user's Sieve script (text), stored and activated with Dovecot's doveadm

    @model_validator(mode="after")
    def _one_password(self) -> UserSpec:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError("give exactly one of password or password_hash")
        return self


class AliasSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: Annotated[str, AfterValidator(check_alias_source)]
    destinations: list[Address] = Field(min_length=1)


class AliasDomainSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    alias: Domain
    target: Domain

    @model_validator(mode="after")
    def _not_itself(self) -> AliasDomainSpec:
        if self.alias == self.target:
            raise ValueError(f"alias domain {self.alias} cannot point to itself")
        return self


class SeedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    domains: list[Domain] = Field(default_factory=list)
    users: list[UserSpec] = Field(default_factory=list)
    aliases: list[AliasSpec] = Field(default_factory=list)
    alias_domains: list[AliasDomainSpec] = Field(default_factory=list)
    # domain -> where mail to its addresses without a mailbox or alias goes (the alias @domain)
    catch_all: dict[Domain, list[Address]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> SeedFile:
        seen: set[str] = set()
        for user in self.users:
            if user.address in seen:
                raise ValueError(f"user {user.address} is listed twice")
            seen.add(user.address)
        sources = [alias.source for alias in self.aliases]
        if len(sources) != len(set(sources)):
            raise ValueError("an alias source is listed twice: give all its destinations in one entry")
        alias_domains = [entry.alias for entry in self.alias_domains]
        if len(alias_domains) != len(set(alias_domains)):
            raise ValueError("an alias domain is listed twice")
        targets = {entry.target for entry in self.alias_domains}
        chained = sorted(targets & set(alias_domains))
        if chained:
            raise ValueError(f"{chained[0]} is both an alias domain and a target: point alias domains to the "
                             "domain with the mailboxes")
        for domain, destinations in self.catch_all.items():
            if not destinations:
                raise ValueError(f"catch_all {domain}: give at least one destination")
            if f"@{domain}" in sources:
                raise ValueError(f"@{domain} is under both aliases and catch_all: give it once")
        return self


@dataclass(frozen=True)
class Change:
    action: str  # "add domain", "add user", "set password", "set quota", "set active", "add alias", ...
    target: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.action} {self.target}" + (f" ({self.detail})" if self.detail else "")


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    keys: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found a key that is a list or a mapping", key_node.start_mark) from None
        if key in keys:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {shown(key)}", key_node.start_mark)
        keys.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _line_of(text: str, loc: tuple[object, ...]) -> int | None:
    """Best effort: the line in the YAML text where the failing item starts."""
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError:
        return None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if k.value == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        if node is None:
            return None
    return node.start_mark.line + 1 if node is not None else None


def parse(text: str, source: str = "<seed>") -> SeedFile:
    """Parse and validate; errors say file:line and what is wrong."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        # ReaderError (a control character, bad encoding) has a reason, no problem; the rest a problem.
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
        problem = " ".join(str(problem).split())[:200]
        raise MailstackError(f"{where}: YAML error: {problem}", "fix the YAML syntax; nothing was changed") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MailstackError(f"{source}: expected a mapping with domains, users and aliases",
                             "see examples/seed.yaml")
    try:
        return SeedFile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(first["loc"])
        line = _line_of(text, loc)
        where = f"{source}:{line}" if line else source
        path = ".".join(p if isinstance(p, str) and len(p) <= 40 and p.isprintable() else shown(p, 20)
                        for p in map(str, loc)) or "file"
        message = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = f"unknown key {shown(loc[-1])}"
        raise MailstackError(f"{where}: {path}: {message}", "see examples/seed.yaml; nothing was changed") from exc


def load(path: Path) -> SeedFile:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MailstackError(f"cannot read seed file {path}: {exc.strerror}", "check the path") from exc
    return parse(text, str(path))


def _require_features(seed: SeedFile, flavour: Flavour) -> None:
    if any(user.quota is not None for user in seed.users):
        flavour.require("quota")
    if any(user.active is not None for user in seed.users):
        flavour.require("active")
    if seed.alias_domains:
        flavour.require("alias_domains")


def plan(seed: SeedFile, store: Store, scheme: passwords.Scheme, cost: passwords.Cost) -> list[tuple[Change, object]]:
    """What applying `seed` would change, given what the database holds now. Each change carries the
    value to write (a hash for users: with its quota and active flag for a new one)."""
    flavour = store.schema
    _require_features(seed, flavour)
    domains = set(store.domains())
    rows = {row.address: row for row in store.user_rows()}
    aliases = store.aliases()
    changes: list[tuple[Change, object]] = []
    wanted_domains = list(dict.fromkeys(seed.domains))
    for domain in wanted_domains:
        check_fits(flavour, "domain", domain)
        if domain not in domains:
            changes.append((Change("add domain", domain), domain))
    known = domains | set(wanted_domains)
    for user in seed.users:
        check_fits(flavour, "address", user.address)
        if domain_of(user.address) not in known:
            raise MailstackError(f"user {user.address}: domain {domain_of(user.address)} is not a local domain",
                                 "add the domain under 'domains:'; nothing was changed")
        row = rows.get(user.address)
        current = row.password if row else None
        hashed: str | None
        if user.password_hash is not None:
            hashed = check_fits(flavour, "password_hash", user.password_hash) if current != user.password_hash \
                else None
            detail = "given hash"
        else:
            assert user.password is not None
            fresh = current is None or not passwords.verify_password(user.password, current)
            hashed = passwords.hash_password(user.password, scheme, cost) if fresh else None
            detail = scheme
        if row is None:
            assert hashed is not None
            changes.append((Change("add user", user.address, detail),
                            (hashed, user.quota, True if user.active is None else user.active)))
            continue
        if hashed is not None:
            changes.append((Change("set password", user.address, detail), hashed))
        if user.quota is not None and row.quota != user.quota:
            changes.append((Change("set quota", user.address, f"{user.quota} bytes"), user.quota))
        if user.active is not None and row.active != user.active:
            changes.append((Change("set active", user.address, "active" if user.active else "disabled"), user.active))
    for alias in seed.aliases:
        if domain_of(alias.source) not in known:
            raise MailstackError(f"alias {alias.source}: domain {domain_of(alias.source)} is not a local domain",
                                 "add the domain under 'domains:'; nothing was changed")
        missing = [d for d in dict.fromkeys(alias.destinations) if d not in aliases.get(alias.source, [])]
        if missing:
            changes.append((Change("add alias", alias.source, " ".join(missing)), missing))
    current_alias_domains = store.alias_domains() if seed.alias_domains else {}
    for entry in seed.alias_domains:
        for domain in (entry.alias, entry.target):
            if domain not in known:
                raise MailstackError(f"alias domain {entry.alias} -> {entry.target}: {domain} is not a local domain",
                                     "add it under 'domains:'; nothing was changed")
        if entry.alias in current_alias_domains:
            if current_alias_domains[entry.alias] != entry.target:
                raise MailstackError(f"alias domain {entry.alias} already points to "
                                     f"{current_alias_domains[entry.alias]}", "seeding never changes an alias "
                                     "domain's target; nothing was changed")
            continue
        changes.append((Change("add alias domain", entry.alias, entry.target), entry.target))
    for domain, destinations in seed.catch_all.items():
        check_fits(flavour, "domain", domain)
        if domain not in known:
            raise MailstackError(f"catch_all {domain}: it is not a local domain",
                                 "add it under 'domains:'; nothing was changed")
        wanted = list(dict.fromkeys(check_fits(flavour, "address", d) for d in destinations))
        if sorted(aliases.get(f"@{domain}", [])) != sorted(wanted):
            changes.append((Change("set catch-all", domain, " ".join(wanted)), wanted))
    return changes


def apply(changes: list[tuple[Change, object]], store: Store) -> None:
    for change, value in changes:
        if change.action == "add domain":
            store.add_domain(change.target)
        elif change.action == "add user":
            hashed, quota, active = value  # type: ignore[misc]
            store.add_user(change.target, hashed, quota=quota, active=active)
        elif change.action == "set password":
            store.set_password(change.target, str(value))
        elif change.action == "set quota":
            store.set_quota(change.target, int(value))  # type: ignore[call-overload]
        elif change.action == "set active":
            store.set_active(change.target, bool(value))
        elif change.action == "add alias":
            store.add_alias(change.target, list(value))  # type: ignore[call-overload]
        elif change.action == "add alias domain":
            store.add_alias_domain(change.target, str(value))
        elif change.action == "set catch-all":
            store.set_catch_all(change.target, list(value))  # type: ignore[call-overload]


def sieve_scripts(seed: SeedFile) -> list[tuple[str, str]]:
    """(address, script) for every user with a `sieve:` script: stored through Dovecot (mailstack.sieve)
    once it runs, not in the database."""
    return [(user.address, user.sieve) for user in seed.users if user.sieve is not None]


def seed_database(db: Database, seed: SeedFile, scheme: passwords.Scheme, cost: passwords.Cost,
                  dry_run: bool = False) -> list[Change]:
    """Apply a seed in one transaction (or only plan it). Returns what changed (or would)."""
    db.create_tables()
    try:
        with db.transaction() as store:
            changes = plan(seed, store, scheme, cost)
            if not dry_run:
                apply(changes, store)
    except pymysql.err.MySQLError as exc:  # validation should make this unreachable; if not, say so clearly
        reason = exc.args[-1] if exc.args else exc
        raise MailstackError(f"the database refused the seed: {shown(reason, 200)}",
                             "nothing was changed (one transaction, rolled back)") from exc
    return [change for change, _ in changes]
