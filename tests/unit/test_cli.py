"""The CLI's argument handling and validation, through typer's CliRunner. No Docker: the database is an
in-memory stand-in, and bad input must fail before anything (stack or database) is touched."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from mailstack import cli, passwords
from mailstack.stack import Stack
from typer.testing import CliRunner, Result

from .conftest import FakeDatabase

runner = CliRunner(env={"MAILSTACK_HASH_COST": "fast"})


@pytest.fixture
def db(fake_db: FakeDatabase, monkeypatch: pytest.MonkeyPatch) -> FakeDatabase:
    """The CLI's database is the fake; the example domain and users exist. Dovecot's login cache flushes
    are recorded in fake_db.flushed."""
    fake_db.store.domain_names.append("example.test")
    fake_db.store.user_hashes["alice@example.test"] = passwords.hash_password("alice-password", cost="fast")
    fake_db.store.alias_rows.append(("team@example.test", "alice@example.test"))
    monkeypatch.setattr(cli.Context, "database", lambda self: fake_db)
    monkeypatch.setattr(cli.Context, "running_stack", lambda self: None)
    fake_db.flushed = []  # type: ignore[attr-defined]
    # the world's DNS records, DKIM keys and the autoconfiguration follow the domains (`make up` has both)
    fake_db.synced = []  # type: ignore[attr-defined]
    monkeypatch.setattr(cli.accounts_module, "publish_domains",
                        lambda stack, domains: fake_db.synced.append(sorted(domains)))  # type: ignore[attr-defined]
    monkeypatch.setattr(cli.accounts_module, "publish_local_domains",
                        lambda stack, database: fake_db.synced.append(sorted(database.store.domain_names)))  # type: ignore[attr-defined]
    monkeypatch.setattr(cli.accounts_module, "forget_cached_logins",
                        lambda stack, addresses=(): fake_db.flushed.append(list(addresses)))  # type: ignore[attr-defined]
    # Dovecot's usage (doveadm quota get): 3 KiB in 2 messages for everyone
    monkeypatch.setattr(cli.accounts_module, "with_quota_usage",
                        lambda stack, users: [dataclasses.replace(u, quota_used=3072, messages=2) for u in users])
    monkeypatch.setattr(cli.Context, "stack", lambda self: None)
    return fake_db


@pytest.fixture
def no_stack(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Fail the test if anything reaches the stack or the database; records what tried."""
    touched: list[str] = []

    def refuse(self: object, *args: object, **kwargs: object) -> None:
        touched.append("stack")
        raise AssertionError("the stack was touched")

    monkeypatch.setattr(cli.Context, "database", refuse)
    monkeypatch.setattr(cli.Context, "running_stack", refuse)
    monkeypatch.setattr(Stack, "containers", refuse)
    return touched


def run(tmp_path: Path, *args: str, input: str | None = None) -> Result:
    return runner.invoke(cli.app, ["--project", "unit", "--state-dir", str(tmp_path), *args], input=input)


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# --- validation before anything is touched ----------------------------------------------------

@pytest.mark.parametrize(("args", "stdin", "message"), [
    (["user", "add", "not-an-address", "--password-stdin"], "long-enough\n", "invalid address"),
    (["user", "add", "o bad@example.test", "--password-stdin"], "long-enough\n", "invalid address"),
    (["user", "add", "alice@example.test", "--password-stdin"], "short\n", "password too short"),
    (["user", "add", "alice@example.test", "--password-stdin"], "\n", "no password on standard input"),
    (["user", "add", "alice@example.test", "--password-stdin"], "", "no password on standard input"),
    (["user", "passwd", "alice@", "--password-stdin"], "long-enough\n", "invalid address"),
    (["user", "remove", "@example.test"], None, "invalid address"),
    (["domain", "add", "not_a_domain"], None, "invalid domain"),
    (["domain", "remove", "x"], None, "invalid domain"),
    (["alias", "add", "team@example.test", "bad address"], None, "invalid address"),
    (["user", "list", "--domain", "-bad-"], None, "invalid domain"),
    (["doctor", "--user", "nobody"], None, "invalid address"),
    (["send", "--from", "alice", "--to", "bob@example.test", "--password-stdin"], "pw\n", "invalid address"),
    (["send", "--from", "alice@example.test", "--to", "bob@", "--password-stdin"], "pw\n", "invalid address"),
    (["inbox", "alice", "--password-stdin"], "pw\n", "invalid address"),
    (["client-config", "alice"], None, "invalid address"),
    (["trace", " "], None, "nothing to trace"),
])
def test_bad_input_is_one_error_line_and_a_hint_and_touches_nothing(
        tmp_path: Path, no_stack: list[str], args: list[str], stdin: str | None, message: str) -> None:
    result = run(tmp_path, *args, input=stdin)
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: ") and message in lines[0]
    assert lines[1].startswith("hint: ")
    assert "Traceback" not in result.output
    assert no_stack == []


def test_a_password_is_never_taken_from_the_command_line(tmp_path: Path, no_stack: list[str]) -> None:
    result = run(tmp_path, "user", "add", "carol@example.test", "--password", "carol-password")
    assert result.exit_code == 2  # usage error: no such option
    assert no_stack == []


def test_seed_with_a_yaml_syntax_error_names_file_and_line(tmp_path: Path, no_stack: list[str]) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("domains:\n  - example.test\nusers: [\n  - address: x\n")
    result = run(tmp_path, "seed", str(seed))
    assert result.exit_code == 1
    first = error_lines(result)[0]
    assert f"{seed}:" in first and "YAML error" in first
    assert no_stack == []


def test_seed_with_an_unknown_key_names_the_key_and_its_line(tmp_path: Path, no_stack: list[str]) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("domains:\n  - example.test\nusers:\n  - address: a@example.test\n    colour: blue\n")
    result = run(tmp_path, "seed", str(seed))
    assert result.exit_code == 1
    assert f"{seed}:5:" in error_lines(result)[0] and "unknown key 'colour'" in error_lines(result)[0]
    assert no_stack == []


def test_missing_seed_file(tmp_path: Path, no_stack: list[str]) -> None:
    result = run(tmp_path, "seed", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 1 and "cannot read seed file" in result.stderr


def test_a_stopped_stack_is_named_with_the_way_to_start_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Stack, "containers", lambda self: [])
    for args in (["domain", "list"], ["user", "add", "carol@example.test", "--password-stdin"],
                 ["user", "add", "carol@example.test"],  # checked before the password prompt
                 ["send", "--from", "carol@example.test", "--to", "bob@example.test"],
                 ["trace", "4F1C2174658"], ["chroot-sync"], ["doctor"]):
        result = run(tmp_path, *args, input="carol-password\n")
        assert result.exit_code == 1, (args, result.output)
        lines = error_lines(result)
        assert lines == ["error: the mail stack 'unit' is not running",
                         "hint: start it with `make up` (or `mailstack up`)"]


# --- the commands, against the in-memory database --------------------------------------------

def test_user_add_with_password_from_stdin_stores_a_hash(tmp_path: Path, db: FakeDatabase) -> None:
    result = run(tmp_path, "user", "add", "Carol@Example.test", "--password-stdin", input="carol-password\n")
    assert result.exit_code == 0, result.output
    stored = db.store.user_hashes["carol@example.test"]
    assert stored.startswith("{ARGON2ID}") and passwords.verify_password("carol-password", stored)


def test_user_add_prompts_twice_and_hides_the_password(tmp_path: Path, db: FakeDatabase) -> None:
    result = run(tmp_path, "user", "add", "dave@example.test", input="dave-password\ndave-password\n")
    assert result.exit_code == 0, result.output
    assert "dave-password" not in result.output
    assert passwords.verify_password("dave-password", db.store.user_hashes["dave@example.test"])


def test_user_add_gives_up_when_the_confirmation_never_matches(tmp_path: Path, db: FakeDatabase) -> None:
    before = db.snapshot()
    result = run(tmp_path, "user", "add", "dave@example.test", input="dave-password\nother-password\n")
    assert result.exit_code == 1
    assert "no password given" in result.stderr
    assert db.snapshot() == before


@pytest.mark.parametrize(("args", "message", "hint"), [
    (["user", "add", "carol@elsewhere.test", "--password-stdin"], "elsewhere.test is not a local domain",
     "domain add elsewhere.test"),
    (["user", "add", "alice@example.test", "--password-stdin"], "user alice@example.test already exists",
     "user passwd"),
    (["user", "passwd", "nobody@example.test", "--password-stdin"], "no user nobody@example.test", "user list"),
    (["user", "remove", "nobody@example.test"], "no user nobody@example.test", "user list"),
    (["domain", "add", "example.test"], "domain example.test already exists", "domain list"),
    (["domain", "remove", "example.test"], "still has 1 user and 1 alias", "--force"),
    (["domain", "remove", "other.test"], "no domain other.test", "domain list"),
    (["alias", "add", "team@elsewhere.test", "a@example.test"], "elsewhere.test is not a local domain", "domain add"),
    (["alias", "add", "team@example.test", "alice@example.test"], "already exists", "alias list"),
    (["alias", "remove", "nobody@example.test"], "no alias nobody@example.test", "alias list"),
])
def test_refused_changes_say_why_and_leave_the_database_unchanged(
        tmp_path: Path, db: FakeDatabase, args: list[str], message: str, hint: str) -> None:
    before = db.snapshot()
    result = run(tmp_path, *args, input="carol-password\n")
    assert result.exit_code == 1, result.output
    lines = error_lines(result)
    assert message in lines[0] and hint in lines[1], lines
    assert db.snapshot() == before


def test_domain_remove_force_takes_users_and_aliases_with_it(tmp_path: Path, db: FakeDatabase) -> None:
    result = run(tmp_path, "domain", "remove", "example.test", "--force")
    assert result.exit_code == 0, result.output
    assert db.snapshot() == ([], {}, [])
    assert db.flushed == [[]]  # type: ignore[attr-defined]  # all of Dovecot's cached logins
    assert db.synced == [[]]  # type: ignore[attr-defined]  # its DNS records go with it


def test_domain_add_publishes_it_in_the_world(tmp_path: Path, db: FakeDatabase) -> None:
    assert run(tmp_path, "domain", "add", "new.test").exit_code == 0
    assert db.synced == [["example.test", "new.test"]]  # type: ignore[attr-defined]


def test_passwd_and_remove_flush_the_users_cached_logins(tmp_path: Path, db: FakeDatabase) -> None:
    result = run(tmp_path, "user", "passwd", "alice@example.test", "--password-stdin", input="new-password\n")
    assert result.exit_code == 0, result.output
    assert passwords.verify_password("new-password", db.store.user_hashes["alice@example.test"])
    assert run(tmp_path, "user", "remove", "alice@example.test").exit_code == 0
    assert "alice@example.test" not in db.store.user_hashes
    assert db.flushed == [["alice@example.test"], ["alice@example.test"]]  # type: ignore[attr-defined]


def test_listings_as_json(tmp_path: Path, db: FakeDatabase) -> None:
    domains = json.loads(run(tmp_path, "domain", "list", "--json").stdout)
    assert domains == [{"name": "example.test", "users": 1, "aliases": 1}]
    users = json.loads(run(tmp_path, "user", "list", "--json").stdout)
    assert users == [{"address": "alice@example.test", "domain": "example.test", "scheme": "ARGON2ID", "quota": 0,
                      "quota_used": 3072, "messages": 2}]
    aliases = json.loads(run(tmp_path, "alias", "list", "--json").stdout)
    assert aliases == [{"source": "team@example.test", "destinations": ["alice@example.test"]}]


def test_quota_usage_from_doveadm_tab_output() -> None:
    from mailstack.accounts import parse_quota_usage  # noqa: PLC0415
    one = "Quota name\tType\tValue\tLimit\t%\nUser quota\tSTORAGE\t18\t20\t90\nUser quota\tMESSAGE\t2\t-\t0\n"
    assert parse_quota_usage(one, "a@example.test") == {"a@example.test": (18 * 1024, 2)}
    every = ("Username\tQuota name\tType\tValue\tLimit\t%\na@example.test\tUser quota\tSTORAGE\t1\t-\t0\n"
             "a@example.test\tUser quota\tMESSAGE\t1\t-\t0\nb@example.test\tUser quota\tSTORAGE\t0\t-\t0\n")
    assert parse_quota_usage(every) == {"a@example.test": (1024, 1), "b@example.test": (0, 0)}
    assert parse_quota_usage("") == {}


def test_listings_as_tables(tmp_path: Path, db: FakeDatabase) -> None:
    assert "example.test" in run(tmp_path, "domain", "list").stdout
    assert "alice@example.test" in run(tmp_path, "user", "list").stdout
    assert "team@example.test" in run(tmp_path, "alias", "list").stdout


def test_alias_add_and_remove_one_destination(tmp_path: Path, db: FakeDatabase) -> None:
    assert run(tmp_path, "alias", "add", "team@example.test", "bob@example.test", "alice@example.test").exit_code == 0
    assert db.store.aliases()["team@example.test"] == ["alice@example.test", "bob@example.test"]
    assert run(tmp_path, "alias", "remove", "team@example.test", "alice@example.test").exit_code == 0
    assert db.store.aliases()["team@example.test"] == ["bob@example.test"]


def test_seed_dry_run_prints_the_plan_and_changes_nothing(tmp_path: Path, db: FakeDatabase) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("domains: [other.test]\nusers:\n  - {address: eve@other.test, password: eve-password}\n")
    before = db.snapshot()
    result = run(tmp_path, "seed", str(seed), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would add domain other.test" in result.stdout and "would add user eve@other.test" in result.stdout
    assert db.snapshot() == before
    result = run(tmp_path, "seed", str(seed))
    assert result.exit_code == 0 and "add user eve@other.test" in result.stdout
    assert "eve@other.test" in db.store.user_hashes


def test_seed_with_a_user_in_an_unknown_domain_changes_nothing(tmp_path: Path, db: FakeDatabase) -> None:
    seed = tmp_path / "seed.yaml"
    seed.write_text("domains: [new.test]\nusers:\n  - {address: eve@unknown.test, password: eve-password}\n")
    before = db.snapshot()
    result = run(tmp_path, "seed", str(seed))
    assert result.exit_code == 1 and "unknown.test is not a local domain" in result.stderr
    assert db.snapshot() == before


def test_error_messages_with_brackets_are_printed_as_they_are(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    from mailstack.errors import MailstackError

    def broken(self: object) -> None:
        raise MailstackError("smtpd said [private/dovecot-lmtp] and [bold]x[/bold]", "see [red]logs[/red]")

    monkeypatch.setattr(cli.Context, "database", broken)
    result = run(tmp_path, "domain", "list")
    assert error_lines(result) == ["error: smtpd said [private/dovecot-lmtp] and [bold]x[/bold]",
                                   "hint: see [red]logs[/red]"]


def test_cli_bad_quota_size_is_refused_before_asking_a_password(tmp_path: Path, no_stack: list[str]) -> None:
    result = run(tmp_path, "user", "add", "a@example.test", "--quota", "lots", "--password-stdin",
                 input="pw-pw-pw-pw\n")
    assert result.exit_code == 1 and error_lines(result)[0].startswith("error: invalid quota")
    result = run(tmp_path, "user", "set-quota", "a@example.test", "12X")
    assert result.exit_code == 1 and error_lines(result)[0].startswith("error: invalid quota")
    assert not no_stack


def test_cli_set_quota_catch_all_and_alias_domains(tmp_path: Path, db: FakeDatabase) -> None:
    assert run(tmp_path, "user", "set-quota", "alice@example.test", "50M").exit_code == 0
    assert db.store.quotas["alice@example.test"] == 50 * 1024**2
    assert db.flushed == [[]]  # type: ignore[attr-defined]  # all of Dovecot's cache: it holds the old quota_rule
    assert run(tmp_path, "user", "set-quota", "alice@example.test", "none").exit_code == 0
    assert db.store.quotas["alice@example.test"] == 0
    result = run(tmp_path, "user", "set-quota", "nobody@example.test", "1G")
    assert result.exit_code == 1 and error_lines(result)[0] == "error: no user nobody@example.test"
    db.store.domain_names.append("alias.test")
    assert run(tmp_path, "alias-domain", "add", "alias.test", "example.test").exit_code == 0
    assert json.loads(run(tmp_path, "alias-domain", "list", "--json").stdout) == [
        {"alias": "alias.test", "target": "example.test"}]
    assert run(tmp_path, "catch-all", "set", "example.test", "alice@example.test").exit_code == 0
    assert run(tmp_path, "catch-all", "set", "example.test", "bob@example.test", "eve@outside.test").exit_code == 0
    assert json.loads(run(tmp_path, "catch-all", "list", "--json").stdout) == [
        {"domain": "example.test", "destinations": ["bob@example.test", "eve@outside.test"]}]
    result = run(tmp_path, "catch-all", "set", "outside.test", "alice@example.test")
    assert result.exit_code == 1 and error_lines(result)[0] == "error: outside.test is not a local domain"
    assert run(tmp_path, "catch-all", "remove", "example.test").exit_code == 0
    assert db.store.catch_alls() == {}
    result = run(tmp_path, "catch-all", "remove", "example.test")
    assert result.exit_code == 1 and error_lines(result)[0] == "error: example.test has no catch-all"
    assert run(tmp_path, "alias-domain", "remove", "alias.test").exit_code == 0
    assert db.store.alias_domain_rows == {}


def test_cli_schema_option_selects_the_flavour(tmp_path: Path, no_stack: list[str]) -> None:
    result = runner.invoke(cli.app, ["--project", "unit", "--state-dir", str(tmp_path), "--schema", "virtual",
                                     "user", "disable", "a@example.test"])
    assert result.exit_code == 1
    assert error_lines(result)[0] == "error: the virtual schema has no disabled users (no active column)"
