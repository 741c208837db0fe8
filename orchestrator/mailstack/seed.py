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
from mailstack.schema import PASSWORD_HASH_MAX, Store, domain_of

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


Domain = Annotated[str, AfterValidator(check_domain)]
Address = Annotated[str, AfterValidator(check_address)]
LoginAddress = Annotated[str, AfterValidator(check_login_address)]
Password = Annotated[str, AfterValidator(check_password)]
PasswordHash = Annotated[str, AfterValidator(check_hash)]


class UserSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    address: LoginAddress
    password: Password | None = None
    password_hash: PasswordHash | None = None

    @model_validator(mode="after")
    def _one_password(self) -> UserSpec:
        if (self.password is None) == (self.password_hash is None):
            raise ValueError("give exactly one of password or password_hash")
        return self


class AliasSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: Address
    destinations: list[Address] = Field(min_length=1)


class SeedFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    domains: list[Domain] = Field(default_factory=list)
    users: list[UserSpec] = Field(default_factory=list)
    aliases: list[AliasSpec] = Field(default_factory=list)

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
        return self


@dataclass(frozen=True)
class Change:
    action: str  # "add domain", "add user", "set password", "add alias"
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


def plan(seed: SeedFile, store: Store, scheme: passwords.Scheme, cost: passwords.Cost) -> list[tuple[Change, object]]:
    """What applying `seed` would change, given what the database holds now. Each change carries the
    value to write (a hash for users)."""
    domains = set(store.domains())
    users = store.users()
    aliases = store.aliases()
    changes: list[tuple[Change, object]] = []
    wanted_domains = list(dict.fromkeys(seed.domains))
    for domain in wanted_domains:
        if domain not in domains:
            changes.append((Change("add domain", domain), domain))
    known = domains | set(wanted_domains)
    for user in seed.users:
        if domain_of(user.address) not in known:
            raise MailstackError(f"user {user.address}: domain {domain_of(user.address)} is not a local domain",
                                 "add the domain under 'domains:'; nothing was changed")
        current = users.get(user.address)
        if user.password_hash is not None:
            if current != user.password_hash:
                changes.append((Change("set password" if current else "add user", user.address, "given hash"),
                                user.password_hash))
            continue
        assert user.password is not None
        if current is not None and passwords.verify_password(user.password, current):
            continue
        changes.append((Change("set password" if current else "add user", user.address, scheme),
                        passwords.hash_password(user.password, scheme, cost)))
    for alias in seed.aliases:
        if domain_of(alias.source) not in known:
            raise MailstackError(f"alias {alias.source}: domain {domain_of(alias.source)} is not a local domain",
                                 "add the domain under 'domains:'; nothing was changed")
        missing = [d for d in dict.fromkeys(alias.destinations) if d not in aliases.get(alias.source, [])]
        if missing:
            changes.append((Change("add alias", alias.source, " ".join(missing)), missing))
    return changes


def apply(changes: list[tuple[Change, object]], store: Store) -> None:
    for change, value in changes:
        if change.action == "add domain":
            store.add_domain(change.target)
        elif change.action == "add user":
            store.add_user(change.target, str(value))
        elif change.action == "set password":
            store.set_password(change.target, str(value))
        elif change.action == "add alias":
            store.add_alias(change.target, list(value))  # type: ignore[call-overload]


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
