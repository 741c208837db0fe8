"""Bad input to the orchestrator's seed files: random text, random YAML, random addresses, unicode, huge
values, duplicate keys, wrong types. Each input either parses (and the result keeps the invariants) or
fails with a MailstackError that says where and what, in a readable line; and applying a seed either
succeeds or changes nothing (seed.parse / seed.seed_database, on the in-memory database of conftest).
"""

from __future__ import annotations

import string

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mailstack import seed
from mailstack.errors import MailstackError
from mailstack.passwords import verify_password
from mailstack.schema import domain_of

from .conftest import FakeDatabase

SOURCE = "seeds/random.yaml"
MAX_MESSAGE = 300  # a message a person reads in one go, whatever the size of the input

# --- strategies -------------------------------------------------------------------------------

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?", fullmatch=True)
tld = st.from_regex(r"[a-z]{2,6}", fullmatch=True)
domains = st.builds(lambda labels, top: ".".join([*labels, top]), st.lists(label, min_size=1, max_size=3), tld)
login_local = st.from_regex(r"[a-z0-9_'+-]{1,8}(\.[a-z0-9_'+-]{1,5})?", fullmatch=True)
passwords = st.text(min_size=8, max_size=40).filter(lambda p: "\x00" not in p)

# Addresses as people type them: valid, shouted, padded, quoted, with SQL in them, unicode, huge.
messy_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=string.printable, max_size=30),
    st.sampled_from(["' OR '1'='1", "x'; DROP TABLE users; --", "%", "_", "\\", "\\'", "\"", "a\x00b",
                     "ünïcødé", "用户", "\u202e", "", " ", "\n", "@", "a@", "@b.test", "a@@b.test"]),
)
addresses = st.one_of(
    st.builds(lambda local, domain: f"{local}@{domain}", login_local, domains),
    st.builds(lambda local, domain: f"  {local.upper()}@{domain.upper()} ", login_local, domains),
    st.builds(lambda junk, domain: f"{junk}@{domain}", messy_text, domains),
    st.builds(lambda local, junk: f"{local}@{junk}", login_local, messy_text),
    messy_text,
    st.builds(lambda n, domain: "a" * n + "@" + domain, st.integers(60, 5000), domains),
)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), messy_text, addresses)
json_like = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(messy_text, st.integers()), inner, max_size=4)),
    max_leaves=12)


@st.composite
def user_specs(draw: st.DrawFn, pool: list[str]) -> object:
    spec: dict[str, object] = {"address": draw(st.one_of(st.sampled_from(pool), addresses) if pool else addresses)}
    choice = draw(st.sampled_from(["password", "hash", "both", "none", "junk"]))
    if choice in ("password", "both"):
        spec["password"] = draw(st.one_of(passwords, st.text(max_size=7), st.integers()))
    if choice in ("hash", "both"):
        spec["password_hash"] = draw(st.sampled_from(
            ["{SHA512-CRYPT}$6$abc$def", "{PLAIN}secret", "nohash", "{ARGON2ID}" + "x" * 300, "{BLF-CRYPT}$2y$04$x"]))
    if choice == "junk":
        spec[draw(messy_text)] = draw(json_like)
    return draw(st.one_of(st.just(spec), json_like)) if draw(st.integers(0, 9)) == 0 else spec


@st.composite
def seed_documents(draw: st.DrawFn) -> object:
    """Mostly the right shape, with bad parts: what a hand-written seed file looks like."""
    doc_domains = draw(st.lists(st.one_of(domains, domains.map(str.upper), messy_text, st.integers()), max_size=4))
    pool = [f"{local}@{d}" for local, d in zip(draw(st.lists(login_local, min_size=len(doc_domains),
                                                             max_size=len(doc_domains))), doc_domains, strict=True)
            if isinstance(d, str)]
    doc: dict[object, object] = {}
    if draw(st.booleans()):
        doc["domains"] = doc_domains
    if draw(st.booleans()):
        doc["users"] = draw(st.lists(user_specs(pool), max_size=4))
    if draw(st.booleans()):
        doc["aliases"] = draw(st.lists(st.fixed_dictionaries(
            {"source": st.one_of(st.sampled_from(pool), addresses) if pool else addresses,
             "destinations": st.lists(st.one_of(st.sampled_from(pool), addresses) if pool else addresses,
                                      max_size=3)}), max_size=3))
    if draw(st.integers(0, 5)) == 0:
        doc[draw(messy_text)] = draw(json_like)
    return doc


@st.composite
def valid_seeds(draw: st.DrawFn) -> seed.SeedFile:
    """Seeds that must apply: every user and alias in a listed domain."""
    names = draw(st.lists(domains, min_size=1, max_size=3, unique=True))
    users = draw(st.lists(st.builds(lambda local, d, pw: {"address": f"{local}@{d}", "password": pw},
                                    login_local, st.sampled_from(names), passwords),
                          max_size=3, unique_by=lambda u: u["address"]))
    aliases = draw(st.lists(st.builds(lambda local, d, dests: {"source": f"{local}@{d}", "destinations": dests},
                                      login_local, st.sampled_from(names),
                                      st.lists(st.builds(lambda local, d: f"{local}@{d}", login_local, domains),
                                               min_size=1, max_size=3)),
                            max_size=3, unique_by=lambda a: a["source"]))
    return seed.SeedFile.model_validate({"domains": names, "users": users, "aliases": aliases})


# --- checks -----------------------------------------------------------------------------------


def parse(text: str) -> seed.SeedFile | MailstackError:
    try:
        return seed.parse(text, SOURCE)
    except MailstackError as exc:
        assert_clear(exc)
        return exc


def assert_clear(exc: MailstackError) -> None:
    """One short line that says which file (and where) and what; a hint saying what to do."""
    assert exc.message.startswith(SOURCE), exc.message
    assert len(exc.message) <= MAX_MESSAGE, f"{len(exc.message)} characters: {exc.message[:200]}..."
    assert "\n" not in exc.message, exc.message
    assert exc.hint, exc.message
    assert "Traceback" not in str(exc) and "pydantic" not in exc.message.lower(), exc.message


def assert_invariants(parsed: seed.SeedFile) -> None:
    for name in parsed.domains:
        assert name == seed.check_domain(name) and name == name.lower()
    addresses_seen = [user.address for user in parsed.users]
    assert len(addresses_seen) == len(set(addresses_seen))
    for user in parsed.users:
        assert user.address == seed.check_login_address(user.address)
        assert (user.password is None) != (user.password_hash is None)
    assert len({a.source for a in parsed.aliases}) == len(parsed.aliases)
    for alias in parsed.aliases:
        assert alias.destinations and all(d == seed.check_address(d) for d in [alias.source, *alias.destinations])


def dump(document: object) -> str:
    # Non-ASCII escaped: PyYAML's own emitter does not round-trip raw NEL/LS characters (st.text()
    # above feeds raw unicode text to the parser).
    return yaml.safe_dump(document, sort_keys=False)


# --- properties -------------------------------------------------------------------------------

FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.text())
@example("? [1, 2]\n: 3\n")  # a key YAML can build but Python cannot hash
@example("domains: [a.test]\ndomains: [b.test]\n")
@example("{")
@example("\t")
@example("- just\n- a list\n")
@example("!!python/object:os.system {}")
@example("domains: !!binary aGVsbG8=\n")
@example("a: &x [*x]\n")
def test_any_text_parses_or_fails_clearly(text: str) -> None:
    result = parse(text)
    if isinstance(result, seed.SeedFile):
        assert_invariants(result)


@FAST
@given(json_like)
def test_any_yaml_document_parses_or_fails_clearly(document: object) -> None:
    result = parse(dump(document))
    if isinstance(result, seed.SeedFile):
        assert_invariants(result)


@FAST
@given(seed_documents())
def test_seed_shaped_documents_parse_or_name_the_bad_part(document: object) -> None:
    result = parse(dump(document))
    if isinstance(result, seed.SeedFile):
        assert_invariants(result)
    else:
        # "file:line: path: what", e.g. "seeds/random.yaml:4: users.0.address: ..."
        assert result.message.count(": ") >= 1


@FEWER
@given(valid_seeds())
def test_valid_seeds_round_trip(parsed: seed.SeedFile) -> None:
    again = seed.parse(dump(parsed.model_dump(exclude_none=True)), SOURCE)
    assert again == parsed


@FEWER
@given(valid_seeds(), st.sampled_from(["top", "user", "alias"]))
def test_duplicate_keys_are_refused(parsed: seed.SeedFile, where: str) -> None:
    text = dump(parsed.model_dump(exclude_none=True))
    if where == "top":
        text += f"domains: [{parsed.domains[0]}]\n"
    elif where == "user" and parsed.users:
        text = text.replace("  password:", "  password: first-password\n  password:", 1)
    elif where == "alias" and parsed.aliases:
        text = text.replace("  destinations:", "  source: other@example.test\n  destinations:", 1)
    else:
        text += "domains: []\n"
    with pytest.raises(MailstackError) as caught:
        seed.parse(text, SOURCE)
    assert_clear(caught.value)
    assert "duplicate key" in caught.value.message


@pytest.mark.parametrize(("text", "expected"), [
    ("domains: example.test\n", "domains: Input should be a valid list"),
    ("domains: [1]\n", "domains.0: Input should be a valid string"),
    ("users: {address: a@b.test}\n", "users: Input should be a valid list"),
    ("users:\n  - address: [a@b.test]\n    password: long-enough\n", "users.0.address"),
    ("users:\n  - address: a@b.test\n    password: 12345678\n", "users.0.password"),
    ("users:\n  - address: a@b.test\n", "exactly one of password or password_hash"),
    ("aliases:\n  - source: a@b.test\n    destinations: []\n", "aliases.0.destinations"),
    ("aliases:\n  - source: a@b.test\n    destinations: b@b.test\n", "aliases.0.destinations"),
    ("domain: [example.test]\n", "unknown key 'domain'"),
    ("users:\n  - address: a@b.test\n    password: long-enough\n    admin: true\n", "unknown key 'admin'"),
    ("domains: [" + "a" * 100_000 + ".test]\n", "is not a domain name"),
    ("users:\n  - address: " + "a" * 1_000_000 + "@b.test\n    password: long-enough\n", "users.0.address"),
    ("users:\n  - address: a@b.test\n    password: " + "p" * 5000 + "\n", "password too long"),
    ("users:\n  - address: a@b.test\n    password_hash: '{ARGON2ID}" + "x" * 300 + "'\n", "password_hash"),
    ("users:\n  - address: ünï@b.test\n    password: long-enough\n", "users.0.address"),
    ("users:\n  - address: \"a b@c.test\"\n    password: long-enough\n", "users.0.address"),
    ("users:\n  - address: a@b.test\n    password: long-enough\n  - address: A@B.TEST\n    password: other-one\n",
     "listed twice"),
])
def test_wrong_types_and_values_name_the_field(text: str, expected: str) -> None:
    with pytest.raises(MailstackError) as caught:
        seed.parse(text, SOURCE)
    assert_clear(caught.value)
    assert expected in caught.value.message


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_seeds(), st.lists(seed_documents(), max_size=2))
def test_seed_database_applies_completely_or_not_at_all(first: seed.SeedFile, others: list[object]) -> None:
    db = FakeDatabase()
    seed.seed_database(db, first, "ARGON2ID", "fast")  # type: ignore[arg-type]
    for document in others:
        parsed = parse(dump(document))
        if not isinstance(parsed, seed.SeedFile):
            continue
        before = db.snapshot()
        try:
            seed.seed_database(db, parsed, "ARGON2ID", "fast")  # type: ignore[arg-type]
        except MailstackError as exc:
            assert exc.hint and "nothing was changed" in exc.hint, exc
            assert db.snapshot() == before
            continue
        assert_applied(db, parsed)
        # Seeding is idempotent: a second run changes nothing.
        assert seed.seed_database(db, parsed, "ARGON2ID", "fast") == []  # type: ignore[arg-type]
    assert_applied(db, first)  # nothing a later seed did removed what the first one made


def assert_applied(db: FakeDatabase, parsed: seed.SeedFile) -> None:
    store = db.store
    assert set(parsed.domains) <= set(store.domains())
    for user in parsed.users:
        stored = store.password_hash(user.address)
        assert stored is not None
        if user.password_hash is not None:
            assert stored == user.password_hash
    for alias in parsed.aliases:
        assert set(alias.destinations) <= set(store.aliases().get(alias.source, []))
    assert all(domain_of(address) in store.domains() for address in store.users())


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_seeds())
def test_seeded_passwords_verify(parsed: seed.SeedFile) -> None:
    db = FakeDatabase()
    seed.seed_database(db, parsed, "ARGON2ID", "fast")  # type: ignore[arg-type]
    for user in parsed.users:
        assert verify_password(user.password or "", db.store.password_hash(user.address) or "")


def test_a_user_outside_the_listed_domains_changes_nothing() -> None:
    db = FakeDatabase()
    seed.seed_database(db, seed.parse("domains: [example.test]\n"), "ARGON2ID", "fast")
    before = db.snapshot()
    bad = seed.parse("domains: [new.test]\nusers:\n  - address: a@new.test\n    password: long-enough\n"
                     "  - address: b@elsewhere.test\n    password: long-enough\n")
    with pytest.raises(MailstackError, match="elsewhere.test is not a local domain"):
        seed.seed_database(db, bad, "ARGON2ID", "fast")
    assert db.snapshot() == before
