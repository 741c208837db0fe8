"""The Python API: bring a stack up (the CLI's `up`), and MailStack, a disposable stack for tests."""

from __future__ import annotations

import email
import email.message
import email.policy
import email.utils
import secrets as random_secrets
import shutil
import smtplib
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imapclient import IMAPClient

from mailstack import accounts as accounts_module
from mailstack import passwords, provision, schema, snapshots
from mailstack import sieve as sieve_module
from mailstack.accounts import parse_quota_usage
from mailstack.db import Database
from mailstack.errors import MailstackError, NotReady, PortTaken
from mailstack.production import Plan, load_dump, make_plan, read_dir
from mailstack.queue import Queue, QueueEntry
from mailstack.seed import (
    SeedFile,
    check_address,
    check_alias_source,
    check_domain,
    check_login_address,
    check_password,
    check_size,
    seed_database,
    sieve_scripts,
)
from mailstack.seed import load as load_seed
from mailstack.settings import PORT_NAMES, Settings, load_settings, stack_files_dir
from mailstack.snapshots import SnapshotInfo
from mailstack.stack import (
    OWNER_FILE,
    Endpoints,
    Stack,
    owner_label,
    pin_free_ports,
    prune_stale,
    stacks_dir,
    torn_down_on_failure,
)
from mailstack.world.access import OutsideReply, Spf, World
from mailstack.world.dkim import DkimRecord
from mailstack.world.dns import Record
from mailstack.world.outbound import StoredMessage

Report = Callable[[str], None]

PORT_ATTEMPTS = 3  # a port chosen free can be taken before Docker binds it: choose again, this often


def _quiet(_: str) -> None:
    return None


def bring_up(settings: Settings, seed: SeedFile | None = None, report: Report = _quiet,
             provision_host: bool = True, volumes_on_failure: bool = False, force_build: bool = False,
             plan: Plan | None = None) -> Stack:
    """Provision what is missing, build (cached, or again with force_build), start, wait for real readiness,
    create tables, seed (or, with a production plan, load its dump)."""
    settings = for_production(settings, plan) if plan is not None else in_its_flavour(settings)
    stack = Stack(settings)
    if plan is not None:
        volumes_on_failure = True  # a new stack, all of whose volumes this call creates
        if provision_host:
            provision.provision(report)
            provision_host = False
        stack.require_no_data()
    _bring_up(stack, seed or SeedFile(), report, provision_host=provision_host, build=True,
              tear_down=True, volumes_on_failure=volumes_on_failure, force_build=force_build, plan=plan).close()
    return stack


def in_its_flavour(settings: Settings) -> Settings:
    """An existing stack keeps the flavour it was made with: adopted when the settings name none, refused
    before anything is rendered or started when they name another (its database could not be read)."""
    rendered = schema.rendered_flavour(settings.config_dir)
    if rendered is None or rendered == settings.schema_flavour:
        return settings
    if "schema_flavour" not in settings.model_fields_set:
        return settings.model_copy(update={"schema_flavour": rendered})
    if not Stack(settings).has_data():
        return settings  # its volumes are gone (`down --volumes`): a fresh stack in the flavour asked for
    raise schema.mismatch_error(rendered, settings.schema_flavour)


def production_plan(directory: Path) -> Plan:
    """Read what was copied off a production server (errors name file:line) into the plan for this stack."""
    return make_plan(read_dir(directory), stack_master_cf=stack_files_dir() / "images" / "postfix" / "master.cf")


def for_production(settings: Settings, plan: Plan) -> Settings:
    """Production's myhostname (the certificate is issued for it) and its schema flavour where it is a
    built-in one (so that `user add` & co. write as that flavour does), unless they were given."""
    update: dict[str, str] = {}
    if plan.hostname is not None and "hostname" not in settings.model_fields_set:
        update["hostname"] = plan.hostname
    if plan.flavour in schema.FLAVOURS and "schema_flavour" not in settings.model_fields_set:
        update["schema_flavour"] = plan.flavour
    try:
        return type(settings)(**{**settings.model_dump(), **update})
    except ValueError:
        return settings.model_copy(update={k: v for k, v in update.items() if k != "hostname"})


LOAD_BUFFER_POOL = 128 << 20  # MariaDB's InnoDB buffer pool while a large dump loads (my.cnf: 8M)
LOAD_BUFFER_POOL_ROWS = 20_000  # from this many rows on


@contextmanager
def _buffer_pool_for_load(stack: Stack, plan: Plan) -> Iterator[None]:
    """A large dump loads 4-5x faster with a buffer pool its indexes fit in (100k mailboxes: 60 s -> 15 s):
    grown for the load only (root over the container's socket: the stack's admin user has no SUPER), the
    stack's own size again after. Without it (a refusal), the load runs as it would anyway."""
    if plan.database is None or plan.database.rows < LOAD_BUFFER_POOL_ROWS:
        yield
        return

    def set_size(size: int) -> bool:
        result = stack.exec("mysql", ["mariadb", "-uroot", "-e", f"SET GLOBAL innodb_buffer_pool_size = {size}"],
                            check=False)
        return result.returncode == 0

    found = stack.exec("mysql", ["mariadb", "-uroot", "-N", "-e", "SELECT @@innodb_buffer_pool_size"], check=False)
    configured = found.stdout.decode().strip()
    if found.returncode != 0 or not configured.isdigit() or int(configured) >= LOAD_BUFFER_POOL:
        yield
        return
    grown = set_size(LOAD_BUFFER_POOL)
    try:
        yield
    finally:
        if grown:
            set_size(int(configured))


def _load_dump(database: Database, plan: Plan, report: Report) -> None:
    """Production's dump into the stack's database, statement by statement, with progress."""
    assert plan.dump is not None
    shown = [-1]

    def progress(done: int, total: int) -> None:
        percent = done * 100 // total if total else 100
        if percent // 10 > shown[0]:
            shown[0] = percent // 10
            report(f"loading {plan.dump.name}: {percent}%")

    connection = database.connect()
    try:
        with connection.cursor() as cursor:
            loaded = load_dump(cursor.execute, plan.dump, progress)
        connection.commit()
    finally:
        connection.close()
    report(f"loaded {plan.dump.name}: {loaded.tables} table(s), {loaded.rows} row(s)"
           + "".join(f"; {label}: {count}" for label, count in loaded.rewrites.items()))


def _bring_up(stack: Stack, seed: SeedFile, report: Report, *, provision_host: bool, build: bool,
              tear_down: bool, volumes_on_failure: bool, force_build: bool = False,
              plan: Plan | None = None) -> Database:
    """bring_up's steps; returns the database with its connection kept open (the caller closes it).
    tear_down: remove the stack again when a step fails (MailStack removes disposable stacks itself)."""
    settings = stack.settings
    if provision_host:
        provision.provision(report)
    if build:
        stack.build(report, force=force_build)
    stack.prepare(plan, domains=seed.domains)
    report("starting containers")
    opened: list[Database] = []

    def seed_now() -> None:  # as soon as MariaDB is ready, while Dovecot and Postfix are still starting
        opened.append(Database.for_stack(stack, keep_open=True))
        if plan is not None:
            if plan.dump is not None:
                with _buffer_pool_for_load(stack, plan):
                    _load_dump(opened[0], plan, report)
            return
        changes = seed_database(opened[0], seed, settings.password_scheme, settings.hash_cost)
        if changes:
            report(f"seeded: {len(changes)} change(s)")

    with torn_down_on_failure(stack, volumes=volumes_on_failure) if tear_down else nullcontext():
        try:
            stack.start(report)
            stack.wait_ready(report=report, then={"mysql": seed_now})
            if plan is None:
                _seed_sieve(stack, seed, report)  # through Dovecot, which runs now (and the users exist)
            _publish_domains(stack, opened[0], report)  # a no-op without a world or a webmail
        except BaseException:
            for database in opened:
                database.close()
            if plan is not None:
                stack.forget_plan()  # nothing of a failed production start stays for a plain `up`
            raise
    return opened[0]


def _publish_domains(stack: Stack, database: Database, report: Report) -> None:
    """The world's DNS records and DKIM keys, the autoconfiguration's domains: those the database has now
    (seeded or loaded)."""
    try:
        accounts_module.publish_local_domains(stack, database)
    except MailstackError as exc:  # a production copy's own schema: no domain list to read
        report(f"the domains are not published (DNS records, DKIM keys, autoconfiguration): {exc}")


def _seed_sieve(stack: Stack, seed: SeedFile, report: Report) -> None:
    scripts = sieve_scripts(seed)
    if scripts:
        changed = sieve_module.set_many(stack, scripts)
        if changed:
            report(f"seeded Sieve scripts of {', '.join(changed)}")


def _prune_quietly() -> None:
    with suppress(Exception):  # someone else's leftovers must never fail this start
        prune_stale()


@dataclass(frozen=True)
class User:
    address: str
    password: str


class MailStack:
    """A disposable, isolated stack: own project, network, volumes and random loopback ports.

    with MailStack(seed={"domains": ["example.test"]}) as stack:
        user = stack.add_user()
        stack.send(user, to=user.address, subject="hi", body="hello")
        message = stack.wait_for_message(user, subject="hi")
    """

    def __init__(self, seed: SeedFile | Mapping[str, Any] | None = None, *, project: str | None = None,
                 keep: bool = False, reuse: bool = False, domain: str = "example.test",
                 report: Report = _quiet, from_production: str | Path | None = None, **settings: Any) -> None:
        """from_production: a folder of files copied off a production server (`mailstack up --from`): its
        settings, queries and dump instead of the seed; read (and refused) here, before anything starts."""
        self.plan = production_plan(Path(from_production)) if from_production is not None else None
        self.seed = seed if isinstance(seed, SeedFile) else SeedFile.model_validate(dict(seed or {}))
        self.domain = check_domain(domain)
        self.keep = keep
        self.reuse = reuse
        self.report = report
        name = project or f"mailstack-test-{uuid.uuid4().hex[:8]}"
        self._named = project is not None
        self._explicit_state_dir = settings.get("state_dir") is not None
        defaults: dict[str, Any] = {
            "project": name, "state_dir": stacks_dir() / name, "ephemeral": not keep and not reuse,
            "hash_cost": "fast", "fast_retry": True, "fast_refusals": True, "mail_fsync": "never", "world": False,
            "webmail": False,
            **{f"{port}_port": 0 for port in PORT_NAMES},
        }
        self.settings = load_settings(**{**defaults, **settings})
        if self.plan is not None:
            self.settings = for_production(self.settings, self.plan)
        self._requested_ports = self.settings.ports()  # 0: chosen at each start (settings then show the choice)
        self._stack: Stack | None = None
        self._endpoints: Endpoints | None = None
        self._database: Database | None = None
        self._owned = False  # this object created the (disposable) stack: stop() removes it

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> MailStack:
        return cls(load_seed(Path(path)), **kwargs)

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> MailStack:
        """Start the stack (with reuse: attach to it when it runs). If anything fails, Ctrl-C included,
        what this call created is removed before the exception propagates."""
        pruning = threading.Thread(target=_prune_quietly, name="mailstack-prune", daemon=True)
        pruning.start()  # stacks of dead processes, meanwhile: it never touches a live one, ours included
        try:
            self._start()
            pruning.join()
        except BaseException:
            with suppress(Exception):  # the start's own error is the one to see; leftovers get pruned
                self.stop()
            raise
        return self

    def _start(self) -> None:
        seed = self.seed
        if self.domain not in seed.domains:
            seed = seed.model_copy(update={"domains": [*seed.domains, self.domain]})
        stack = Stack(self.settings)
        if self.reuse:
            found = stack.snapshot()
            if stack.is_running(found):
                self._attach(stack, found, seed)
                return
        elif self.settings.ephemeral and self._named and stack.is_disposable() is False:  # random names are new
            raise MailstackError(
                f"project {self.settings.project!r} belongs to a stack that is not disposable (`make up`, "
                "a kept or a reused one); a disposable MailStack would replace it and delete its data",
                "pass reuse=True to use that stack, or choose another project name",
            )
        self._owned = self.settings.ephemeral
        if self._owned:  # who owns the state directory, for pruning if we are killed before Docker has anything
            self.settings.state_dir.mkdir(parents=True, exist_ok=True)
            (self.settings.state_dir / OWNER_FILE).write_text(owner_label())
        images = stack.images_present()  # then Docker and Compose work: nothing to provision
        for attempt in range(1, PORT_ATTEMPTS + 1):
            # Ports of 0 are chosen here, not by Docker at each start: they survive a service's restart.
            requested = self.settings.model_copy(
                update={f"{name}_port": port for name, port in self._requested_ports.items()})
            stack = self._stack = Stack(pin_free_ports(requested), network_of=stack)
            try:
                self._database = _bring_up(stack, seed, self.report, provision_host=not images and attempt == 1,
                                           build=not images and attempt == 1, tear_down=not self._owned,
                                           volumes_on_failure=not self.keep, plan=self.plan)
                break
            except PortTaken:
                if attempt == PORT_ATTEMPTS or 0 not in self._requested_ports.values():
                    raise  # out of attempts, or the ports were given: not ours to change
                if self._owned:
                    stack.destroy()  # what was created, before trying other ports
        self.settings = stack.settings
        self._endpoints = stack.endpoints()

    def _attach(self, stack: Stack, found: Mapping[str, Any], seed: SeedFile) -> None:
        """Use a running stack as it is: no compose call; only probes, the seed and a lookup of its ports."""
        mounted = stack.mounted_state_dir(found)
        if mounted is not None and mounted != self.settings.state_dir and not self._explicit_state_dir:
            # started with another state directory (e.g. `make up`'s .mailstack): its secrets and CA are there
            self.settings = self.settings.model_copy(update={"state_dir": mounted})
            stack = Stack(self.settings)
        self._stack = stack
        stack.wait_ready()
        self._database = Database.for_stack(stack, keep_open=True)
        seed_database(self._database, seed, self.settings.password_scheme, self.settings.hash_cost)
        _seed_sieve(stack, seed, self.report)
        self._endpoints = stack.endpoints(found)

    def stop(self) -> None:
        """Remove a disposable stack: containers, volumes, network and state directory. A kept or reused
        stack is left running. Safe to call more than once."""
        database, self._database = self._database, None
        if database is not None:
            database.close()
        stack, self._stack = self._stack, None
        self._endpoints = None
        if not self._owned:
            return
        self._owned = False
        try:
            (stack or Stack(self.settings)).destroy()
        finally:
            shutil.rmtree(self.settings.state_dir, ignore_errors=True)

    def __enter__(self) -> MailStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- what code under test needs -----------------------------------------------------------

    @property
    def stack(self) -> Stack:
        if self._stack is None:
            raise MailstackError("this MailStack is not started", "use it as `with MailStack() as stack:`")
        return self._stack

    @property
    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            raise MailstackError("this MailStack is not started", "use it as `with MailStack() as stack:`")
        return self._endpoints

    @property
    def ca_cert(self) -> Path:
        return self.settings.ca_cert

    @property
    def hostname(self) -> str:
        return self.settings.hostname

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts this stack's CA (verification stays on)."""
        return ssl.create_default_context(cafile=str(self.ca_cert))

    @property
    def database(self) -> Database:
        if self._database is None:
            raise MailstackError("this MailStack is not started")
        return self._database

    # --- data ---------------------------------------------------------------------------------

    def add_domain(self, name: str) -> str:
        name = check_domain(name)
        with self.database.transaction() as store:
            store.add_domain(name)
        self._domains_changed()
        return name

    def _domains_changed(self) -> None:
        accounts_module.publish_local_domains(self.stack, self.database)

    def add_user(self, address: str | None = None, password: str | None = None, *, quota: str | int | None = None,
                 active: bool = True) -> User:
        """A mailbox user; quota (like "50M", or bytes) and active=False where the schema flavour has them."""
        address = check_login_address(address or f"user-{uuid.uuid4().hex[:10]}@{self.domain}")
        password = check_password(password or random_secrets.token_urlsafe(12))
        size = check_size(quota) if quota is not None else None
        hashed = passwords.hash_password(password, self.settings.password_scheme, self.settings.hash_cost)
        with self.database.transaction() as store:
            if not store.add_user(address, hashed, quota=size, active=active):
                raise MailstackError(f"cannot add {address}: its domain is not a local domain",
                                     "add the domain first (add_domain or the seed)")
        return User(address, password)

    def add_alias(self, source: str, *destinations: str) -> None:
        """source may be a catch-all, @domain."""
        source = check_alias_source(source)
        with self.database.transaction() as store:
            store.add_alias(source, [check_address(d) for d in destinations])

    def set_alias_active(self, source: str, active: bool) -> None:
        """Enable or disable an alias row (flavours with an active column on aliases: postfixadmin)."""
        self.database.schema.require("active")
        with self.database.transaction() as store:
            store.set_alias_active(source, active)  # type: ignore[attr-defined]

    def set_user_active(self, address: str, active: bool) -> None:
        with self.database.transaction() as store:
            store.set_active(check_login_address(address), active)
        self.stack.exec("dovecot", ["doveadm", "auth", "cache", "flush", address])

    def set_quota(self, address: str, size: str | int) -> int:
        """Set a mailbox's quota (like "50M", bytes, 0 or "none": unlimited); returns it in bytes. Dovecot's
        auth cache (which holds the userdb answer with the old quota_rule) is flushed: it applies at once."""
        address = check_login_address(address)
        size = 0 if isinstance(size, str) and size.strip().lower() in ("none", "unlimited") else size
        quota = check_size(size)
        self.database.schema.require("quota")
        with self.database.transaction() as store:
            if not store.set_quota(address, quota) and store.password_hash(address) is None:
                raise MailstackError(f"no user {address}", "add it first (add_user or the seed)")
        # Dovecot's per-user flush reaches only passdb entries (0 userdb entries flushed): flush everything
        self.stack.exec("dovecot", ["doveadm", "auth", "cache", "flush"])
        return quota

    def quota_usage(self, address: str) -> tuple[int, int]:
        """What Dovecot counts against the mailbox's quota: (bytes, messages)."""
        address = check_login_address(address)
        result = self.stack.exec("dovecot", ["doveadm", "-f", "tab", "quota", "get", "-u", address])
        return parse_quota_usage(result.stdout.decode(errors="replace"), address).get(address, (0, 0))

    def set_catch_all(self, domain: str, *destinations: str) -> None:
        """Mail to an address of domain that is no mailbox or alias goes to destinations (the alias @domain;
        replaces its destinations). Real mailboxes keep their mail."""
        domain = check_domain(domain)
        wanted = [check_address(d) for d in destinations]
        if not wanted:
            raise MailstackError("a catch-all needs at least one destination")
        with self.database.transaction() as store:
            if domain not in store.domains():
                raise MailstackError(f"{domain} is not a local domain", "add it first (add_domain or the seed)")
            store.set_catch_all(domain, wanted)

    def remove_catch_all(self, domain: str) -> None:
        with self.database.transaction() as store:
            store.remove_alias(f"@{check_domain(domain)}")

    def add_alias_domain(self, alias: str, target: str) -> None:
        """Mail to anyone@alias goes to anyone@target; both are added as domains when missing."""
        alias, target = check_domain(alias), check_domain(target)
        with self.database.transaction() as store:
            for domain in (alias, target):
                store.add_domain(domain)
            store.add_alias_domain(alias, target)
        self._domains_changed()

    def queue(self) -> list[QueueEntry]:
        """What waits in Postfix's queue now (postqueue -j)."""
        return Queue(self.stack).entries()

    # --- the webmail (webmail=True) ---------------------------------------------------------------

    @property
    def webmail_url(self) -> str:
        """Roundcube's address, e.g. http://127.0.0.1:41234 (raises without one: MailStack(webmail=True))."""
        url = self.endpoints.webmail_url
        if url is None:
            raise MailstackError("this stack has no webmail", "start it with MailStack(webmail=True) "
                                 "(pytest: --mailstack-webmail)")
        return url

    # --- the outside world (world=True) --------------------------------------------------------

    @property
    def world(self) -> World:
        """The outside world's tools (raises when the stack has none: MailStack(world=True))."""
        return World(self.stack)

    def outbound_messages(self) -> list[StoredMessage]:
        """What the outside MX received (mail for every non-local domain), oldest first."""
        return self.world.outbound()

    def wait_for_outbound(self, *, to: str | None = None, subject: str | None = None, timeout: float = 30.0
                          ) -> email.message.EmailMessage:
        """Poll until the outside MX has a message to `to` whose subject contains `subject`; it, parsed."""
        return self.world.wait_for_outbound(to=to, subject=subject, timeout=timeout)

    def clear_outbound(self) -> int:
        return self.world.clear_outbound()

    def send_from_outside(self, to: str | list[str], *, from_: str | None = None, spf: Spf | None = None,
                          subject: str = "from outside", body: str = "hello from outside\n",
                          message: bytes | email.message.EmailMessage | None = None) -> OutsideReply:
        """Mail to port 25 as an outside server sends it (from the outside MX's address, STARTTLS): spf="pass"
        or "fail" picks a sender domain whose SPF record passes or fails for that address."""
        return self.world.send_from_outside(to, from_=from_, spf=spf, subject=subject, body=body, message=message)

    def dkim_record(self, domain: str | None = None) -> DkimRecord:
        """The DKIM TXT record (name, value) of a local domain's current key (default: the stack's domain)."""
        return self.world.dkim_record(domain or self.domain)

    def dns_records(self, domain: str | None = None) -> list[Record]:
        return self.world.dns_records(domain or self.domain)

    # --- Sieve filters -------------------------------------------------------------------------

    def set_sieve(self, user_or_address: User | str, script: str, name: str = sieve_module.SCRIPT_NAME) -> None:
        """Store a Sieve script for the user and make it the active one (applied at delivery). A script
        Sieve refuses raises MailstackError with Sieve's message; the active script then stays."""
        self._sieve().set(_address(user_or_address), script, name)

    def get_sieve(self, user_or_address: User | str, name: str | None = None) -> str:
        """The user's active Sieve script (or the one named)."""
        return self._sieve().get(_address(user_or_address), name)

    def list_sieve(self, user_or_address: User | str) -> list[sieve_module.SieveScript]:
        return self._sieve().scripts(_address(user_or_address))

    def remove_sieve(self, user_or_address: User | str, name: str | None = None) -> str:
        """Delete the user's active Sieve script (or the one named): mail goes to INBOX unfiltered again."""
        return self._sieve().remove(_address(user_or_address), name)

    def _sieve(self) -> sieve_module.Sieve:
        return sieve_module.Sieve(self.stack)

    # --- snapshots ----------------------------------------------------------------------------

    def snapshot(self, name: str, *, force: bool = False) -> SnapshotInfo:
        """Save the database, maildirs and Postfix queue as snapshot `name` (in the state directory: a
        disposable stack's go with it). An existing name is refused unless force=True."""
        return snapshots.save(self.stack, name, force=force, report=self.report)

    def restore(self, name: str) -> SnapshotInfo:
        """Make the stack what it was at snapshot(name), while it runs: users, mail and queue added since are
        gone. Open IMAP/POP3 sessions are closed; connect again to see the restored mailboxes."""
        return snapshots.restore(self.stack, name, report=self.report, database=self.database)

    def snapshots(self) -> list[SnapshotInfo]:
        return snapshots.list_snapshots(self.stack)

    def delete_snapshot(self, name: str) -> None:
        snapshots.delete(self.stack, name)

    # --- mail ---------------------------------------------------------------------------------

    def send(self, user: User | None, to: str | list[str], subject: str = "test", body: str = "test",
             sender: str | None = None, message: email.message.EmailMessage | None = None) -> str:
        """Send one message: as `user` through 587 (STARTTLS + AUTH), or, with user=None, as an outside
        sender through 25. Returns the Message-ID."""
        recipients = [to] if isinstance(to, str) else list(to)
        if message is None:
            message = email.message.EmailMessage()
            message["From"] = sender or (user.address if user else "sender@outside.test")
            message["To"] = ", ".join(recipients)
            message["Subject"] = subject
            message["Message-ID"] = email.utils.make_msgid(domain="mailstack.test")
            message.set_content(body)
        endpoint = self.endpoints.submission if user else self.endpoints.smtp
        with smtplib.SMTP(endpoint.host, endpoint.port, local_hostname="client.test", timeout=30) as smtp:
            smtp.starttls(context=self.ssl_context())
            if user:
                smtp.login(user.address, user.password)
            smtp.send_message(message, from_addr=sender or (user.address if user else None), to_addrs=recipients)
        return str(message["Message-ID"])

    def imap(self, user: User) -> IMAPClient:
        client = IMAPClient(self.endpoints.imaps.host, port=self.endpoints.imaps.port, ssl=True,
                            ssl_context=self.ssl_context(), timeout=30)
        client.login(user.address, user.password)
        return client

    def wait_for_message(self, user: User, subject: str | None = None, message_id: str | None = None,
                         timeout: float = 10.0, interval: float = 0.05,
                         folder: str = "INBOX") -> email.message.EmailMessage:
        """Poll the user's mailbox over IMAPS until a message with this subject / Message-ID arrives."""
        if subject is None and message_id is None:
            raise ValueError("give subject or message_id")
        criteria: list[Any] = []
        if message_id:
            criteria += ["HEADER", "Message-ID", message_id]
        if subject:
            criteria += ["SUBJECT", subject]
        deadline = time.monotonic() + timeout
        with self.imap(user) as client:
            client.select_folder(folder, readonly=True)
            while True:
                found = client.search(criteria, charset="UTF-8")
                if found:
                    raw = client.fetch(found[-1:], ["RFC822"])[found[-1]][b"RFC822"]
                    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]
                if time.monotonic() > deadline:
                    raise NotReady(f"no message {subject or message_id!r} for {user.address} within {timeout}s",
                                   "`mailstack logs postfix` shows whether it was accepted and delivered")
                time.sleep(interval)  # poll interval, bounded by the deadline
                client.noop()


def _address(user_or_address: User | str) -> str:
    return check_login_address(user_or_address.address if isinstance(user_or_address, User) else user_or_address)


__all__ = ["MailStack", "SnapshotInfo", "User", "bring_up"]
