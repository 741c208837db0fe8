"""Unit-test helpers: an in-memory stand-in for the mail database (the Store's operations, same rules)."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pytest
from mailstack.schema import DEFAULT, Flavour, UserRow, domain_of


class FakeStore:
    """Store's reads and writes over dicts, with the SQL's semantics (INSERT IGNORE, FK cascades)."""

    def __init__(self, schema: Flavour = DEFAULT) -> None:
        self.schema = schema
        self.domain_names: list[str] = []
        self.user_hashes: dict[str, str] = {}
        self.quotas: dict[str, int] = {}
        self.inactive: set[str] = set()
        self.alias_rows: list[tuple[str, str]] = []
        self.alias_domain_rows: dict[str, str] = {}

    def user_rows(self) -> list[UserRow]:
        return [UserRow(address, hashed, self.quotas.get(address, 0) if self.schema.supports("quota") else None,
                        address not in self.inactive if self.schema.supports("active") else None)
                for address, hashed in sorted(self.user_hashes.items())]

    def set_quota(self, address: str, quota: int) -> bool:
        self.schema.require("quota")
        self.quotas[address] = quota
        return address in self.user_hashes

    def set_active(self, address: str, active: bool) -> bool:
        self.schema.require("active")
        (self.inactive.discard if active else self.inactive.add)(address)
        return address in self.user_hashes

    def alias_domains(self) -> dict[str, str]:
        self.schema.require("alias_domains")
        return dict(self.alias_domain_rows)

    def add_alias_domain(self, alias: str, target: str) -> bool:
        self.schema.require("alias_domains")
        if alias in self.alias_domain_rows:
            return False
        self.alias_domain_rows[alias] = target
        return True

    def remove_alias_domain(self, alias: str) -> bool:
        self.schema.require("alias_domains")
        return self.alias_domain_rows.pop(alias, None) is not None

    def catch_alls(self) -> dict[str, list[str]]:
        return {source[1:]: dests for source, dests in self.aliases().items() if source.startswith("@")}

    def set_catch_all(self, domain: str, destinations: Iterable[str]) -> None:
        self.remove_alias(f"@{domain}")
        self.add_alias(f"@{domain}", destinations)

    def create_tables(self) -> None:
        return None

    def domains(self) -> list[str]:
        return sorted(self.domain_names)

    def domain_usage(self) -> dict[str, tuple[int, int]]:
        return {name: (sum(domain_of(u) == name for u in self.user_hashes),
                       sum(domain_of(s) == name for s, _ in self.alias_rows)) for name in self.domains()}

    def users(self) -> dict[str, str]:
        return dict(sorted(self.user_hashes.items()))

    def aliases(self) -> dict[str, list[str]]:
        result: dict[str, list[str]] = {}
        for source, destination in sorted(self.alias_rows):
            result.setdefault(source, []).append(destination)
        return result

    def password_hash(self, address: str) -> str | None:
        return self.user_hashes.get(address)

    def add_domain(self, name: str) -> bool:
        if name in self.domain_names:
            return False
        self.domain_names.append(name)
        return True

    def remove_domain(self, name: str) -> bool:
        if name not in self.domain_names:
            return False
        self.domain_names.remove(name)
        self.user_hashes = {a: h for a, h in self.user_hashes.items() if domain_of(a) != name}
        self.alias_rows = [(s, d) for s, d in self.alias_rows if domain_of(s) != name]
        self.alias_domain_rows = {a: t for a, t in self.alias_domain_rows.items() if name not in (a, t)}
        return True

    def add_user(self, address: str, password_hash: str, quota: int | None = None, active: bool = True) -> bool:
        if quota is not None:
            self.schema.require("quota")
            self.quotas[address] = quota
        if not active:
            self.schema.require("active")
            self.inactive.add(address)
        if domain_of(address) not in self.domain_names:
            return False
        if address in self.user_hashes:
            raise AssertionError("duplicate key (the SQL would raise IntegrityError)")
        self.user_hashes[address] = password_hash
        return True

    def set_password(self, address: str, password_hash: str) -> bool:
        if address not in self.user_hashes:
            return False
        self.user_hashes[address] = password_hash
        return True

    def remove_user(self, address: str) -> bool:
        return self.user_hashes.pop(address, None) is not None

    def add_alias(self, source: str, destinations: Iterable[str]) -> int:
        added = 0
        for destination in destinations:
            if domain_of(source) in self.domain_names and (source, destination) not in self.alias_rows:
                self.alias_rows.append((source, destination))
                added += 1
        return added

    def remove_alias(self, source: str, destination: str | None = None) -> int:
        keep = [(s, d) for s, d in self.alias_rows if not (s == source and destination in (None, d))]
        removed = len(self.alias_rows) - len(keep)
        self.alias_rows = keep
        return removed


class FakeDatabase:
    """Database.transaction() semantics: the block's changes are kept on success, undone on failure."""

    def __init__(self, schema: Flavour = DEFAULT) -> None:
        self.schema = schema
        self.store = FakeStore(schema)
        self.transactions = 0

    @contextmanager
    def transaction(self) -> Iterator[FakeStore]:
        self.transactions += 1
        before = copy.deepcopy(self.store)
        try:
            yield self.store
        except BaseException:
            self.store = before
            raise

    def create_tables(self) -> None:
        return None

    def check_flavour(self) -> None:
        return None

    def snapshot(self) -> tuple[list[str], dict[str, str], list[tuple[str, str]]]:
        return (list(self.store.domain_names), dict(self.store.user_hashes), list(self.store.alias_rows))


@pytest.fixture
def fake_db() -> FakeDatabase:
    return FakeDatabase()
