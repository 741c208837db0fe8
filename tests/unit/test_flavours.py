"""The schema flavours as rendered (exact queries, postconf commands), their Store statements against a
recording cursor, the seed's new keys and the one-line errors naming the flavour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mailstack import passwords, schema
from mailstack.accounts import Accounts
from mailstack.errors import MailstackError
from mailstack.seed import apply, parse, plan

from .conftest import FakeDatabase


def _rendered(tmp_path: Path, flavour: schema.Flavour) -> tuple[dict[str, str], str, list[str]]:
    schema.render_configs(tmp_path, flavour, "pw-pw-pw-pw", "ARGON2ID", postconf_commands=[("-e", "x = 1")])
    maps = {path.stem: next(line for line in path.read_text().splitlines() if line.startswith("query = "))[8:]
            for path in (tmp_path / "postfix").glob("*.cf")}
    overrides = [line for line in (tmp_path / "postfix" / "postconf.overrides").read_text().splitlines()
                 if not line.startswith("#")]
    return maps, (tmp_path / "dovecot" / "dovecot-sql.conf.ext").read_text(), overrides


def test_virtual_renders_the_tutorials_queries(tmp_path: Path) -> None:
    maps, dovecot, overrides = _rendered(tmp_path, schema.VIRTUAL)
    assert maps["mysql-virtual-mailbox-domains"] == "SELECT 1 FROM virtual_domains WHERE name='%s'"
    assert maps["mysql-virtual-mailbox-maps"] == "SELECT 1 FROM virtual_users WHERE email='%s'"
    assert maps["mysql-virtual-alias-maps"] == "SELECT destination FROM virtual_aliases WHERE source='%s'"
    assert maps["mysql-email2email"] == "SELECT email FROM virtual_users WHERE email='%s'"
    assert "server_uptime" in maps
    assert "password_query = SELECT email AS user, password FROM virtual_users WHERE email='%u'\n" in dovecot
    assert "CONCAT('*:bytes=', quota) AS quota_rule" in dovecot
    assert "default_pass_scheme = SHA512-CRYPT\n" in dovecot
    assert "-e\tvirtual_alias_maps = mysql:/etc/postfix/sql/mysql-virtual-alias-maps.cf, " \
           "mysql:/etc/postfix/sql/mysql-email2email.cf, mysql:/etc/postfix/sql/mysql-virtual-alias-domain-maps.cf, " \
           "mysql:/etc/postfix/sql/mysql-virtual-alias-domain-catchall-maps.cf" in overrides
    assert overrides[-1] == "-e\tx = 1"  # the caller's commands come after the flavour's


def test_postfixadmin_renders_its_documented_queries(tmp_path: Path) -> None:
    maps, dovecot, overrides = _rendered(tmp_path, schema.POSTFIXADMIN)
    assert maps["mysql_virtual_domains_maps"] == "SELECT domain FROM domain WHERE domain='%s' AND active = '1'"
    assert maps["mysql_virtual_alias_maps"] == "SELECT goto FROM alias WHERE address='%s' AND active = '1'"
    assert maps["mysql_virtual_alias_domain_maps"] == (
        "SELECT goto FROM alias,alias_domain WHERE alias_domain.alias_domain = '%d' and alias.address = "
        "CONCAT('%u', '@', alias_domain.target_domain) AND alias.active='1' AND alias_domain.active='1'")
    assert maps["mysql_virtual_mailbox_maps"] == "SELECT maildir FROM mailbox WHERE username='%s' AND active = '1'"
    assert maps["mysql_mailbox_maps"] == "SELECT username FROM mailbox WHERE username = '%s' AND active = '1'"
    assert ("password_query = SELECT username AS user,password FROM mailbox WHERE username = '%u' "
            "AND active='1'\n") in dovecot
    assert "CONCAT('/var/mail/vmail/', maildir) AS home" in dovecot and "AS quota_rule" in dovecot
    assert "iterate_query = SELECT username as user FROM mailbox WHERE active = '1'\n" in dovecot
    assert ("-e\tvirtual_mailbox_maps = mysql:/etc/postfix/sql/mysql_virtual_mailbox_maps.cf, "
            "mysql:/etc/postfix/sql/mysql_virtual_alias_domain_mailbox_maps.cf") in overrides
    ddl = (tmp_path / "mysql" / "schema.sql").read_text()
    assert "latin1_general_ci" in ddl and "`quota2`" in ddl and "INSERT IGNORE INTO mailstack_schema" in ddl


def test_default_renders_what_main_cf_already_says(tmp_path: Path) -> None:
    maps, dovecot, overrides = _rendered(tmp_path, schema.DEFAULT)
    assert maps["virtual_domains"] == "SELECT 1 FROM domains WHERE name = '%s'"
    assert "default_pass_scheme = ARGON2ID\n" in dovecot
    main_cf = (Path(__file__).parents[2] / "images" / "postfix" / "main.cf").read_text()
    for line in overrides[:-1]:
        parameter, value = line.removeprefix("-e\t").split(" = ")
        if parameter == "quota_limited_check":
            # main.cf asks quota-status for every recipient: right where no flavour's map is installed
            assert value == "check_recipient_access $quota_limited_recipients"
            assert "quota_limited_check = $quota_status_check\n" in main_cf
            continue
        assert f"{parameter} = {value}\n" in main_cf


def test_switching_flavour_leaves_no_stale_map_files(tmp_path: Path) -> None:
    _rendered(tmp_path, schema.DEFAULT)
    maps, _, _ = _rendered(tmp_path, schema.VIRTUAL)
    assert "virtual_domains" not in maps


def test_default_alias_maps_put_real_mailboxes_before_any_catch_all(tmp_path: Path) -> None:
    maps, dovecot, overrides = _rendered(tmp_path, schema.DEFAULT)
    assert ("-e\tvirtual_alias_maps = mysql:/etc/postfix/sql/virtual_aliases.cf, "
            "mysql:/etc/postfix/sql/virtual_mailbox_self.cf, mysql:/etc/postfix/sql/alias_domain_addresses.cf, "
            "mysql:/etc/postfix/sql/alias_domain_catch_all.cf") in overrides
    assert maps["virtual_mailbox_self"] == "SELECT email FROM users WHERE email = '%u@%d'"  # email2email
    # user@alias -> user@target only for a mailbox or an alias there (%u: never for the key @alias)
    assert maps["alias_domain_addresses"].startswith("SELECT CONCAT('%u', '@', t.name) FROM alias_domains ad ")
    assert "EXISTS (SELECT 1 FROM users WHERE email = CONCAT('%u', '@', t.name))" in maps["alias_domain_addresses"]
    # the target's catch-all answers only the key @alias, asked after every map missed the full address
    assert maps["alias_domain_catch_all"].endswith("WHERE a.name = '%d' AND '%s' = CONCAT('@', a.name)")
    assert "quota_rule" in dovecot and "IFNULL(quota, 0)" in dovecot
    assert schema.DEFAULT.supports("quota") and schema.DEFAULT.supports("alias_domains")


def test_virtual_alias_domain_maps_follow_email2email() -> None:
    order = schema.VIRTUAL.postfix_parameters["virtual_alias_maps"]
    assert order == ("mysql-virtual-alias-maps", "mysql-email2email", "mysql-virtual-alias-domain-maps",
                     "mysql-virtual-alias-domain-catchall-maps")
    assert "FROM virtual_alias_domains ad" in schema.VIRTUAL.postfix_maps["mysql-virtual-alias-domain-maps"]
    assert schema.VIRTUAL.postfix_maps["mysql-virtual-alias-domain-catchall-maps"].endswith(
        "WHERE a.name='%d' AND '%s'=CONCAT('@', a.name)")


@pytest.mark.parametrize("flavour", [schema.DEFAULT, schema.VIRTUAL])
def test_migrations_are_idempotent_and_run_after_the_ddl(tmp_path: Path, flavour: schema.Flavour) -> None:
    for statement in flavour.migrations:
        assert statement.startswith(("CREATE TABLE IF NOT EXISTS", "ALTER TABLE users ADD COLUMN IF NOT EXISTS"))
        assert "ON DELETE CASCADE" in statement or "ADD COLUMN" in statement
    cursor = RecordingCursor()
    flavour.store(cursor).create_tables()
    run = [query for query, _ in cursor.statements]
    assert run[-len(flavour.migrations):] == list(flavour.migrations)
    assert run == list(flavour.schema_statements())
    _rendered(tmp_path, flavour)
    init = (tmp_path / "mysql" / "schema.sql").read_text()  # the MariaDB init file, run at each server start
    assert init.endswith("".join(f"{statement};\n" for statement in flavour.migrations))
    assert "ALTER TABLE users ADD COLUMN IF NOT EXISTS quota BIGINT UNSIGNED NULL DEFAULT NULL" in init or \
        flavour is schema.VIRTUAL


def test_default_store_writes_a_null_quota_for_unlimited() -> None:
    cursor = RecordingCursor({"SELECT email, password, quota": [("a@example.test", "{ARGON2ID}x", None)]})
    store = schema.DEFAULT.store(cursor)
    store.set_quota("a@example.test", 0)
    assert cursor.statements[-1] == ("UPDATE users SET quota = NULLIF(%(quota)s, 0) WHERE email = %(address)s",
                                     {"address": "a@example.test", "quota": 0})
    assert store.user_rows()[0].quota == 0  # NULL: unlimited
    store.add_alias_domain("other.test", "example.test")
    assert cursor.statements[-1][0].startswith("INSERT IGNORE INTO alias_domains (alias_domain_id, target_domain_id)")
    store.set_catch_all("example.test", ["postmaster@example.test"])
    assert [args for _, args in cursor.statements[-2:]] == [
        {"source": "@example.test"},
        {"source": "@example.test", "destination": "postmaster@example.test", "domain": "example.test"}]


class RecordingCursor:
    def __init__(self, answers: dict[str, Any] | None = None) -> None:
        self.statements: list[tuple[str, Any]] = []
        self.answers = answers or {}
        self._last: Any = ()

    def execute(self, query: str, args: Any = None) -> int:
        self.statements.append((query, args))
        self._last = next((rows for key, rows in self.answers.items() if key in query), ())
        return 1

    def fetchall(self) -> Any:
        return self._last

    def fetchone(self) -> Any:
        return self._last[0] if self._last else None


def test_postfixadmin_user_gets_its_maildir_and_self_alias() -> None:
    cursor = RecordingCursor()
    store = schema.POSTFIXADMIN.store(cursor)
    assert store.add_user("alice@example.test", "{ARGON2ID}x", quota=1024, active=True)
    insert, params = cursor.statements[0]
    assert insert.startswith("INSERT INTO mailbox")
    assert params["maildir"] == "example.test/alice/" and params["quota"] == 1024 and params["local_part"] == "alice"
    assert cursor.statements[-1][1]["goto"] == "alice@example.test"


def test_postfixadmin_alias_merges_destinations_into_goto() -> None:
    cursor = RecordingCursor({"SELECT domain FROM domain": (("example.test",),),
                              "SELECT address, goto FROM alias": (("team@example.test", "a@x.test"),)})
    store = schema.POSTFIXADMIN.store(cursor)
    assert store.add_alias("team@example.test", ["a@x.test", "b@x.test"]) == 1
    assert cursor.statements[-1][1] == {"address": "team@example.test", "goto": "a@x.test,b@x.test"}


def test_virtual_statements_name_the_tutorials_tables() -> None:
    cursor = RecordingCursor()
    schema.VIRTUAL.store(cursor).add_user("bob@example.test", "{ARGON2ID}y", quota=5)
    query, params = cursor.statements[0]
    assert "INSERT INTO virtual_users (domain_id, email, password, quota)" in query and params["quota"] == 5


@pytest.mark.parametrize(("text", "message"), [
    ("users:\n  - address: a@example.test\n    password: long-enough\n    quota: lots\n",
     "<seed>:4: users.0.quota: 'lots' is not a size"),
    ("alias_domains:\n  - alias: alias.test\n    target: example.test\n    goal: x\n",
     "<seed>:4: alias_domains.0.goal: unknown key"),
    ("alias_domains:\n  - {alias: same.test, target: same.test}\n", "cannot point to itself"),
])
def test_seed_new_keys_are_validated_with_file_and_line(text: str, message: str) -> None:
    with pytest.raises(MailstackError) as refused:
        parse(text)
    assert message in refused.value.message


def test_seed_sizes_and_flags() -> None:
    seed = parse("users:\n  - {address: a@example.test, password: long-enough, quota: 50M, active: false}\n")
    assert seed.users[0].quota == 50 * 1024**2 and seed.users[0].active is False


def test_seed_plans_quota_alias_domains_and_catch_all_on_the_default_flavour(fake_db: FakeDatabase) -> None:
    seed = parse("domains: [example.test, other.test]\nusers:\n  - {address: a@example.test, password: long-enough, "
                 "quota: 1G}\nalias_domains:\n  - {alias: other.test, target: example.test}\n"
                 "catch_all:\n  example.test: [a@example.test]\n")
    changes = plan(seed, fake_db.store, "ARGON2ID", "fast")  # type: ignore[arg-type]
    assert [str(change) for change, _ in changes][-2:] == [
        "add alias domain other.test (example.test)", "set catch-all example.test (a@example.test)"]
    assert changes[2][1][1] == 1024**3  # type: ignore[index]
    apply(changes, fake_db.store)  # type: ignore[arg-type]
    assert fake_db.store.catch_alls() == {"example.test": ["a@example.test"]}
    assert plan(seed, fake_db.store, "ARGON2ID", "fast") == []  # type: ignore[arg-type]  # applied: nothing to do


@pytest.mark.parametrize(("text", "message"), [
    ("domains: [a.test]\ncatch_all:\n  a.test: []\n", "catch_all a.test: give at least one destination"),
    ("domains: [a.test]\naliases:\n  - {source: '@a.test', destinations: [x@a.test]}\n"
     "catch_all:\n  a.test: [y@a.test]\n", "@a.test is under both aliases and catch_all"),
    ("domains: [a.test, b.test, c.test]\nalias_domains:\n  - {alias: a.test, target: b.test}\n"
     "  - {alias: b.test, target: c.test}\n", "b.test is both an alias domain and a target"),
])
def test_seed_catch_all_and_alias_domain_mistakes(text: str, message: str) -> None:
    with pytest.raises(MailstackError) as refused:
        parse(text)
    assert message in refused.value.message


def test_seed_plans_quota_and_alias_domains_on_postfixadmin() -> None:
    db = FakeDatabase(schema.POSTFIXADMIN)
    seed = parse("domains: [example.test, alias.test]\nusers:\n  - {address: a@example.test, password: long-enough, "
                 "quota: 10K}\nalias_domains:\n  - {alias: alias.test, target: example.test}\n")
    changes = plan(seed, db.store, "ARGON2ID", "fast")  # type: ignore[arg-type]
    assert [str(change) for change, _ in changes][-1] == "add alias domain alias.test (example.test)"
    assert changes[2][1][1] == 10 * 1024  # type: ignore[index]


@pytest.mark.parametrize(("call", "message"), [
    (lambda a: a.set_active("a@example.test", False), "the default schema has no disabled users"),
])
def test_accounts_name_the_flavour_that_lacks_a_feature(fake_db: FakeDatabase, call: Any, message: str) -> None:
    accounts = Accounts(lambda: fake_db, cost="fast")  # type: ignore[arg-type, return-value]
    with pytest.raises(MailstackError) as refused:
        call(accounts)
    assert refused.value.message.startswith(message)
    assert fake_db.transactions == 0


def test_virtual_refuses_an_address_wider_than_its_column(fake_db: FakeDatabase) -> None:
    accounts = Accounts(lambda: fake_db, cost="fast", flavour=schema.VIRTUAL)  # type: ignore[arg-type, return-value]
    with pytest.raises(MailstackError) as refused:
        accounts.add_domain("d" * 60 + ".test")
    assert "the virtual schema's column holds at most 50" in refused.value.message


def test_orchestrator_hashes_fit_the_virtual_password_column() -> None:
    for scheme in ("ARGON2ID", "BLF-CRYPT"):
        assert len(passwords.hash_password("a-long-password", scheme, "production")) <= schema.VIRTUAL.limits.password


def test_pytest_option_reaches_mailstack() -> None:
    from mailstack.pytest_plugin import stack_options

    assert stack_options(False, None, None, "postfixadmin")["schema"] == "postfixadmin"
    assert "schema" not in stack_options(False, None, None)


def test_mailstack_takes_the_schema_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    from mailstack.api import MailStack

    monkeypatch.delenv("MAILSTACK_SCHEMA", raising=False)
    assert MailStack(schema="virtual").settings.schema_flavour == "virtual"
    monkeypatch.setenv("MAILSTACK_SCHEMA", "postfixadmin")
    assert MailStack().settings.schema_flavour == "postfixadmin"


@pytest.mark.parametrize("name", sorted(schema.FLAVOURS))
def test_the_quota_map_costs_no_query_for_keys_that_are_not_addresses(name: str) -> None:
    """check_recipient_access also looks up the domain, parent domains and user@: with '%u@%d' Postfix
    suppresses those queries (bench: 10.1 -> 6.4 selects per message with the self map's)."""
    maps = schema.flavour(name).postfix_maps
    quota = next(query for map_name, query in maps.items() if "quota" in map_name)
    assert "'%u@%d'" in quota and "'%s'" not in quota
