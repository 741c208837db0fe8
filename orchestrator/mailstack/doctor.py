"""Checks that name what is wrong. Each check is one function returning a Result: ok, fail (with a hint
saying what to do) or skip (it could not run, e.g. its container is down).

The pure parts (reading `stat`, `postconf`, `postmap` output) are separate functions, unit-tested without
Docker; the checks run the real commands in the running containers, the way Postfix and Dovecot do.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pymysql.err
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from mailstack import certs, chroot, passwords, schema
from mailstack.db import Database
from mailstack.errors import MailstackError, StackNotRunning, tail
from mailstack.schema import domain_of
from mailstack.stack import SERVICES, Endpoint, Stack

# Pinned in images/postfix/Dockerfile and images/dovecot/Dockerfile.
POSTFIX_UID = POSTFIX_GID = 200
VMAIL_UID = VMAIL_GID = 5000
PRIVATE_DIR = "/var/spool/postfix/private"
# Dovecot's listeners Postfix connects to (dovecot.conf: unix_listener ... user/group postfix, mode).
SOCKETS = {"auth": 0o660, "dovecot-lmtp": 0o600, "quota-status": 0o660}
# The same over TCP (MAILSTACK_LMTP_AUTH_TCP=1, images/dovecot/entrypoint.sh): port -> (name, what it says first).
TCP_LISTENERS = {24: ("lmtp", "220 "), 12345: ("auth", "VERSION\t"), 12340: ("quota-status", "")}
# From Postfix's container: connect to each, read the greeting of those that send one (quota-status waits).
TCP_PROBE = r"""host=$1; shift
for spec in "$@"; do
  port=${spec%%:*}
  if exec 3<>"/dev/tcp/$host/$port"; then
    line=
    if [[ "${spec#*:}" == greets ]]; then IFS= read -r -t 3 line <&3 || true; fi
    [[ "$port" != 24 ]] || printf 'QUIT\r\n' >&3
    exec 3>&-
    printf '%s|connected|%s\n' "$port" "${line%$'\r'}"
  else
    printf '%s|refused|\n' "$port"
  fi
done"""
MAIL_DIR = "/var/mail/vmail"
SQL_DIR = "/etc/postfix/sql"
# The main.cf parameter a map serves says which kind of key it is looked up with.
MAP_PARAMETERS = {
    "virtual_mailbox_domains": "domain",
    "virtual_mailbox_maps": "user",
    "virtual_alias_maps": "alias",
    "smtpd_sender_login_maps": "user",
    # main.cf's own parameter: the mailboxes with a limit (quota-status is asked for them at RCPT)
    "quota_limited_recipients": "quota",
}
DOVEADM_NO_SUCH_USER = 67

Status = Literal["ok", "fail", "skip"]


@dataclass(frozen=True)
class Result:
    name: str
    status: Status
    detail: str
    hint: str | None = None

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def ok(name: str, detail: str) -> Result:
    return Result(name, "ok", detail)


def fail(name: str, detail: str, hint: str | None = None) -> Result:
    return Result(name, "fail", _one_line(detail), hint)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def skip(name: str, detail: str) -> Result:
    return Result(name, "skip", detail)


@dataclass(frozen=True)
class Subjects:
    """What the checks look up: the --user address, else real rows from the database."""

    domain: str | None = None
    user: str | None = None
    alias: str | None = None
    user_in_db: bool = False
    domain_in_db: bool = False
    counts: tuple[int, int, int] | None = None  # domains, users, aliases
    hashes: dict[str, str] | None = None  # address -> stored password hash
    error: str | None = None  # why the database could not be read as admin


# --- pure helpers -----------------------------------------------------------------------------

def socket_problems(stat_output: str, expected: dict[str, int] = SOCKETS) -> list[str]:
    """`stat -c '%n|%u|%g|%a|%F'` output for the sockets -> what is wrong with them."""
    seen: dict[str, tuple[int, int, int, str]] = {}
    for line in stat_output.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 5:
            path, uid, gid, mode, kind = parts
            seen[path.rsplit("/", 1)[-1]] = (int(uid), int(gid), int(mode, 8), kind)
    problems = []
    for name, want_mode in expected.items():
        if name not in seen:
            problems.append(f"private/{name} is missing")
            continue
        uid, gid, mode, kind = seen[name]
        if kind != "socket":
            problems.append(f"private/{name} is a {kind}, not a socket")
        if (uid, gid) != (POSTFIX_UID, POSTFIX_GID):
            problems.append(f"private/{name} is owned by {uid}:{gid}, want postfix {POSTFIX_UID}:{POSTFIX_GID}")
        if mode != want_mode:
            problems.append(f"private/{name} has mode {mode:04o}, want {want_mode:04o}")
    return problems


def tcp_listener_problems(probe_output: str, host: str) -> list[str]:
    """TCP_PROBE's output (PORT|connected|first line, or PORT|refused|) -> what is wrong with each listener."""
    seen = {}
    for line in probe_output.splitlines():
        port, _, rest = line.partition("|")
        state, _, said = rest.partition("|")
        if port.isdigit():
            seen[int(port)] = (state, said)
    problems = []
    for port, (name, greeting) in TCP_LISTENERS.items():
        state, said = seen.get(port, ("refused", ""))
        if state != "connected":
            problems.append(f"{name} ({host}:{port}) refuses connections")
        elif greeting and not said.startswith(greeting):
            problems.append(f"{name} ({host}:{port}) said {said!r}, not {greeting.strip()!r}...")
    return problems


def parse_postconf(output: str) -> dict[str, str]:
    """`postconf name ...` output -> {name: value}."""
    values = {}
    for line in output.splitlines():
        name, sep, value = line.partition(" = ")
        if sep:
            values[name.strip()] = value.strip()
        elif line.strip().endswith(" ="):
            values[line.strip()[:-2].strip()] = ""
    return values


def map_tables(parameters: dict[str, str], map_names: Iterable[str]) -> dict[str, tuple[str, str] | None]:
    """For each map (rendered as SQL_DIR/NAME.cf): the main.cf parameter using it and the exact table
    spec there (e.g. proxy:mysql:/etc/postfix/sql/virtual_domains.cf), or None when nothing uses it."""
    found: dict[str, tuple[str, str] | None] = {}
    for name in map_names:
        found[name] = None
        suffix = f"{SQL_DIR}/{name}.cf"
        for parameter, value in parameters.items():
            table = next((t for t in value.replace(",", " ").split() if t.endswith(suffix)), None)
            if table:
                found[name] = (parameter, table)
                break
    return found


PostmapOutcome = Literal["found", "missing", "error"]


def classify_postmap(returncode: int, stdout: str, stderr: str) -> tuple[PostmapOutcome, str]:
    """`postmap -q` exits 0 (found, value on stdout) or 1 both for 'not found' and for errors: errors
    are the ones that say something (warning:/fatal:) on stderr."""
    said = stderr.strip()
    if returncode == 0 and "fatal:" not in said:
        return "found", stdout.strip()
    if returncode == 1 and not said:
        return "missing", ""
    return "error", tail(said or stdout, 3) or f"postmap exited with {returncode}"


def postmap_hint(message: str) -> str:
    lowered = message.lower()
    if "access denied" in lowered:
        return "the maps' database password is not MariaDB's: `mailstack up` renders the maps from the state dir again"
    if "connect" in lowered or "query error" in lowered or "server host" in lowered:
        return "Postfix cannot query MariaDB: `mailstack status`, `mailstack logs mysql`, `mailstack logs postfix`"
    if "proxymap service is not configured" in lowered:
        return "the table is not listed in proxy_read_maps (main.cf)"
    return "`mailstack logs postfix` shows the whole error"


def cert_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


# --- the checks -------------------------------------------------------------------------------

def running_services(stack: Stack) -> set[str]:
    services = stack.status()["services"]
    return {name for name, info in services.items() if info["state"] == "running"}  # type: ignore[union-attr]


def check_containers(running: set[str], expected: Sequence[str] = SERVICES) -> Result:
    down = [service for service in expected if service not in running]
    if down:
        return fail("containers", f"not running: {', '.join(down)}",
                    f"`mailstack up` starts them; `mailstack logs {down[0]}` says why it stopped")
    return ok("containers", f"{', '.join(expected)} running")


def find_subjects(stack: Stack, user: str | None = None) -> Subjects:
    """Real keys to look up: the given user (and its domain), else the first user, domain and alias."""
    try:
        database = Database.for_stack(stack)
        connection = database.connect(timeout=5)
        try:
            with connection.cursor() as cursor:
                store = database.schema.store(cursor)
                domains, hashes, aliases = store.domains(), store.users(), store.aliases()
        finally:
            connection.close()
    except (MailstackError, pymysql.err.MySQLError) as exc:
        message = exc.message if isinstance(exc, MailstackError) else str(exc)
        return Subjects(domain=domain_of(user) if user else None, user=user, error=message)
    users = list(hashes)
    chosen = user or (users[0] if users else None)
    domain = domain_of(chosen) if chosen else (domains[0] if domains else None)
    alias = next((source for source in aliases if domain and domain_of(source) == domain), next(iter(aliases), None))
    return Subjects(domain=domain, user=chosen, alias=alias, user_in_db=chosen in users,
                    domain_in_db=domain in domains,
                    counts=(len(domains), len(users), sum(len(d) for d in aliases.values())), hashes=hashes)


def check_database(subjects: Subjects) -> Result:
    if subjects.error or subjects.counts is None:
        return fail("database (admin)", subjects.error or "not read",
                    "`mailstack logs mysql`; the admin password is in the state dir's secrets/")
    domains, users, aliases = subjects.counts
    return ok("database (admin)", f"{domains} domain(s), {users} user(s), {aliases} alias row(s)")


def check_postfix_config(stack: Stack) -> Result:
    """`postfix check`. Its script logs warnings through postlog, which writes them to stderr only on a
    terminal (else only to the mail log): `script` gives it one."""
    result = stack.exec("postfix", ["script", "-qec", "postfix check", "/dev/null"], check=False)
    if result.returncode == 127:  # no util-linux `script`: warnings then only reach the log
        result = stack.exec("postfix", ["postfix", "check"], check=False)
    said = (result.stderr + result.stdout).decode(errors="replace").replace("\r", "").strip()
    if result.returncode != 0:
        return fail("postfix check", tail(said, 2) or f"exited with {result.returncode}",
                    "`mailstack logs postfix`; fix main.cf/master.cf in images/postfix")
    warnings = [line for line in said.splitlines() if "warning:" in line or "fatal:" in line]
    if warnings:
        return fail("postfix check", tail("\n".join(warnings), 2).replace("\n", "; "),
                    "the other checks usually name the cause; `postfix check` in the container repeats it")
    return ok("postfix check", "no warnings")


def check_maps(stack: Stack, subjects: Subjects, flavour: schema.Flavour) -> list[Result]:
    """Each Postfix SQL map, queried exactly as main.cf names it, with a real key from the database."""
    result = stack.exec("postfix", ["postconf", *MAP_PARAMETERS], check=False)
    parameters = parse_postconf(result.stdout.decode(errors="replace"))
    tables = map_tables(parameters, flavour.postfix_maps)
    # Only a parameter's first map must know the key: the others answer other keys (a mailbox mapped to
    # itself, alias domains), and "not found" is their right answer for an alias.
    first = {parameter: next(iter(value.replace(",", " ").split()), "") for parameter, value in parameters.items()}
    return [check_map(stack, name, where, subjects, primary=where is None or first.get(where[0]) == where[1])
            for name, where in tables.items()]


def check_map(stack: Stack, name: str, where: tuple[str, str] | None, subjects: Subjects,
              primary: bool = True) -> Result:
    label = f"map {name}"
    if where is None:
        return fail(label, f"{SQL_DIR}/{name}.cf is used by none of {', '.join(MAP_PARAMETERS)}",
                    "main.cf (images/postfix) and the schema flavour's postfix_maps disagree")
    parameter, table = where
    kind = MAP_PARAMETERS[parameter]
    key = {"domain": subjects.domain, "user": subjects.user, "alias": subjects.alias, "quota": subjects.user}[kind]
    in_db = {"domain": subjects.domain_in_db, "user": subjects.user_in_db, "alias": True, "quota": False}[kind]
    expected = key is not None and in_db and primary
    probe = key or (f"mailstack-doctor@{subjects.domain}" if subjects.domain else "mailstack-doctor.invalid")
    run = stack.exec("postfix", ["postmap", "-q", probe, table], check=False)
    outcome, said = classify_postmap(run.returncode, run.stdout.decode(errors="replace"),
                                     run.stderr.decode(errors="replace"))
    if outcome == "error":
        return fail(label, f"{table}: {said}", postmap_hint(said))
    if outcome == "found":
        return ok(label, f"{probe} → {said}")
    if expected:
        return fail(label, f"{probe} not found by {table}, though the database has it",
                    f"the map's query (schema flavour) does not match the data: see {SQL_DIR}/{name}.cf")
    if key is not None and kind == "user" and primary:
        return fail(label, f"{probe} not found: it is not a user in the database",
                    f"`mailstack user add {probe}`, or `mailstack user list`")
    if key is not None and kind == "domain" and primary:
        return fail(label, f"{probe} not found: it is not a local domain",
                    f"`mailstack domain add {probe}`, or `mailstack domain list`")
    if kind == "quota":
        return ok(label, f"answers ({probe}: no quota, so quota-status is not asked for it at RCPT)")
    if not primary:
        return ok(label, f"answers ({probe}: not found; this map answers other keys than the first map's)")
    return ok(label, f"answers ({probe}: not found; no {kind} in the database to look up)")


def check_map_credentials(stack: Stack, subjects: Subjects, flavour: schema.Flavour) -> Result:
    """The maps' own credentials (the read-only mail reader), straight to MariaDB (no proxymap)."""
    label = f"database ({schema.MAIL_READER})"
    name = next(iter(flavour.postfix_maps))
    probe = subjects.domain or "mailstack-doctor.invalid"
    run = stack.exec("postfix", ["postmap", "-q", probe, f"mysql:{SQL_DIR}/{name}.cf"], check=False)
    outcome, said = classify_postmap(run.returncode, run.stdout.decode(errors="replace"),
                                     run.stderr.decode(errors="replace"))
    if outcome == "error":
        return fail(label, f"a lookup with the maps' credentials failed: {said}", postmap_hint(said))
    return ok(label, f"the maps' credentials work ({name}: {probe} {'found' if outcome == 'found' else 'not found'})")


def check_dovecot_user(stack: Stack, subjects: Subjects) -> Result:
    label = "dovecot user"
    if subjects.user is None and subjects.error:
        return skip(label, "the database could not be read for a user to look up (give --user ADDRESS)")
    if subjects.user is None:
        return skip(label, "no user in the database to look up (give --user ADDRESS)")
    run = stack.exec("dovecot", ["doveadm", "user", subjects.user], check=False)
    output = run.stdout.decode(errors="replace")
    if run.returncode == 0:
        values = dict(line.split("\t", 1) for line in output.splitlines() if "\t" in line)
        return ok(label, f"{subjects.user}: home {values.get('home', '?')}, uid {values.get('uid', '?')}")
    said = tail((run.stderr.decode(errors="replace") + output).strip(), 2)
    if run.returncode == DOVEADM_NO_SUCH_USER:
        if subjects.user_in_db:
            return fail(label, f"Dovecot does not find {subjects.user}, though the database has it",
                        "Dovecot's user_query (schema flavour, dovecot-sql.conf.ext) does not match the data")
        return fail(label, f"no user {subjects.user}", f"`mailstack user add {subjects.user}`")
    return fail(label, f"doveadm user {subjects.user} exited with {run.returncode}: {said}",
                "Dovecot's auth cannot query MariaDB: `mailstack logs dovecot`")


def default_pass_scheme(sql_conf: str) -> str:
    """dovecot-sql.conf.ext's default_pass_scheme (Dovecot's own default when absent: MD5, i.e. MD5-CRYPT)."""
    for line in sql_conf.splitlines():
        name, equals, value = line.partition("=")
        if equals and name.strip() == "default_pass_scheme":
            scheme = value.strip().upper()
            return "MD5-CRYPT" if scheme == "MD5" else scheme
    return "MD5-CRYPT"


def hash_problems(hashes: dict[str, str], scheme: str) -> list[tuple[str, str, str]]:
    """(address, problem, fix) for every stored hash Dovecot cannot verify with the scheme it will use."""
    found = []
    for address, stored in sorted(hashes.items()):
        problem = passwords.scheme_problem(stored, scheme)
        if problem:
            found.append((address, problem, passwords.scheme_fix(stored, scheme)))
    return found


def check_password_hashes(stack: Stack, subjects: Subjects) -> Result:
    """Every user's stored hash against the scheme Dovecot verifies it with (its prefix, else the passdb's
    default_pass_scheme, read from the file Dovecot uses)."""
    name = "password hashes"
    if subjects.hashes is None:
        return skip(name, subjects.error or "the database was not read")
    conf = stack.exec("dovecot", ["cat", "/etc/dovecot/dovecot-sql.conf.ext"]).stdout.decode(errors="replace")
    scheme = default_pass_scheme(conf)
    problems = hash_problems(subjects.hashes, scheme)
    if not problems:
        return ok(name, f"{len(subjects.hashes)} user(s) verifiable (default_pass_scheme = {scheme})")
    shown = "; ".join(f"{address}: {problem}" for address, problem, _ in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    fixes = list(dict.fromkeys(fix for _, _, fix in problems))
    return fail(name, f"{len(problems)} user(s) cannot log in: {shown}{more}", "; or ".join(fixes[:2]))


def check_sockets(stack: Stack) -> Result:
    transport = stack.exec("postfix", ["postconf", "-h", "virtual_transport"], check=False).stdout.decode().strip()
    if transport.startswith("lmtp:inet:"):  # MAILSTACK_LMTP_AUTH_TCP=1: no sockets, TCP listeners
        return check_tcp_listeners(stack, transport.split(":")[2])
    paths = [f"{PRIVATE_DIR}/{name}" for name in SOCKETS]
    run = stack.exec("postfix", ["stat", "-c", "%n|%u|%g|%a|%F", *paths], check=False)
    problems = socket_problems(run.stdout.decode(errors="replace"))
    if problems:
        return fail("sockets", "; ".join(problems),
                    f"Dovecot makes them at start as dovecot.conf says: `docker compose -p {stack.settings.project} "
                    "restart dovecot`")
    described = ", ".join(f"{name} {mode:04o}" for name, mode in SOCKETS.items())
    return ok("sockets", f"private/{{{described}}} owned by postfix {POSTFIX_UID}:{POSTFIX_GID}")


def check_tcp_listeners(stack: Stack, host: str) -> Result:
    """Dovecot's LMTP, auth and quota-status answer Postfix over TCP, from Postfix's container."""
    specs = [f"{port}:{'greets' if greeting else 'silent'}" for port, (_, greeting) in TCP_LISTENERS.items()]
    run = stack.exec("postfix", ["bash", "-c", TCP_PROBE, "probe", host, *specs], check=False)
    problems = tcp_listener_problems(run.stdout.decode(errors="replace"), host)
    if problems:
        return fail("tcp listeners", "; ".join(problems),
                    f"Dovecot listens on its internal address (MAILSTACK_INTERNAL_LISTEN): `mailstack logs dovecot`; "
                    f"`docker compose -p {stack.settings.project} restart dovecot`")
    described = ", ".join(f"{name} {port}" for port, (name, _) in TCP_LISTENERS.items())
    return ok("tcp listeners", f"{host}: {described} answer Postfix")


def check_chroot(stack: Stack) -> Result:
    problems = chroot.problems(stack)
    if problems:
        return fail("chroot", "; ".join(str(problem) for problem in problems),
                    "`mailstack chroot-sync` (or `mailstack doctor --fix-chroot`) copies them again and "
                    "reloads Postfix")
    return ok("chroot", f"{chroot.QUEUE_DIRECTORY}/etc matches /etc")


def check_tls(stack: Stack, running: set[str]) -> Result:
    """The server certificate: valid for the hostname, not near expiry, and the one the servers present
    (IMAPS, and SMTP's STARTTLS on port 25, which needs no SASL and so tests TLS alone)."""
    settings = stack.settings
    files = certs.TlsFiles.under(settings.config_dir / "tls")
    renew = (f"`mailstack down && mailstack up` makes a new one (in {files.server_cert.parent}) "
             "and restarts the servers with it")
    problem = certs.server_cert_problem(files, settings.hostname)
    if problem:
        return fail("tls", f"server certificate {problem}", renew)
    on_disk = cert_der(files.server_cert.read_bytes())
    try:
        endpoints = stack.endpoints()
        ports = [("imaps", "dovecot", endpoints.imaps), ("smtp starttls", "postfix", endpoints.smtp)]
    except StackNotRunning:
        ports = []
    checked = []
    for name, service, endpoint in ports:
        if service not in running:
            continue
        try:
            presented = presented_certificate(endpoint, files.ca_cert, settings.hostname,
                                              starttls=name.startswith("smtp"))
        except ssl.SSLCertVerificationError as exc:
            return fail("tls", f"{name} on {endpoint}: {exc.verify_message or exc}",
                        f"clients trusting {files.ca_cert} cannot verify {settings.hostname}: {renew}")
        except (OSError, ssl.SSLError, ValueError) as exc:
            return fail("tls", f"{name} on {endpoint}: no TLS session: {exc or type(exc).__name__}",
                        f"`mailstack logs {service}` says why")
        if presented != on_disk:
            return fail("tls", f"{name} on {endpoint} presents another certificate than {files.server_cert}",
                        "the servers still run with an old certificate: restart them (`mailstack down && "
                        "mailstack up`)")
        checked.append(name)
    cert = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    return ok("tls", f"valid for {settings.hostname} until {cert.not_valid_after_utc:%Y-%m-%d}"
              + (f", presented on {' and '.join(checked)}" if checked else ""))


def presented_certificate(endpoint: Endpoint, ca_cert: Path, hostname: str, starttls: bool = False,
                          timeout: float = 5.0) -> bytes:
    """The certificate a port presents (DER), verified against the stack's CA for `hostname`; with
    starttls, after an SMTP greeting, EHLO and STARTTLS."""
    context = ssl.create_default_context(cafile=str(ca_cert))
    host = "127.0.0.1" if endpoint.host in ("0.0.0.0", "") else endpoint.host  # noqa: S104 - a wildcard bind
    with socket.create_connection((host, endpoint.port), timeout=timeout) as raw:
        if starttls:
            reader = raw.makefile("rb")
            _smtp_reply(reader, "220")
            raw.sendall(b"EHLO mailstack-doctor\r\n")
            _smtp_reply(reader, "250")
            raw.sendall(b"STARTTLS\r\n")
            _smtp_reply(reader, "220")
        with context.wrap_socket(raw, server_hostname=hostname) as tls:
            der = tls.getpeercert(binary_form=True)
            if starttls:
                tls.sendall(b"QUIT\r\n")
    if der is None:
        raise ssl.SSLError("no certificate presented")
    return der


def _smtp_reply(reader: object, code: str) -> None:
    """Read one (multi-line) SMTP reply; ValueError unless it has `code`."""
    while True:
        line = reader.readline(1024).decode(errors="replace")  # type: ignore[attr-defined]
        if not line.startswith(code):
            raise ValueError(f"expected {code}, got {line.strip() or 'nothing'}")
        if line[3:4] != "-":
            return


def check_mailbox_dir(stack: Stack) -> Result:
    """Dovecot writes every maildir as vmail: the root of them must be writable by it."""
    probe = f'p={MAIL_DIR}/.mailstack-doctor.$$ && : > "$p" && rm -f "$p"'
    run = stack.exec("dovecot", ["sh", "-c", probe], user=f"{VMAIL_UID}:{VMAIL_GID}", check=False)
    if run.returncode == 0:
        return ok("mailbox dir", f"{MAIL_DIR} writable by vmail ({VMAIL_UID})")
    owner = stack.exec("dovecot", ["stat", "-c", "%u:%g %a", MAIL_DIR], check=False).stdout.decode().strip()
    return fail("mailbox dir", f"{MAIL_DIR} is not writable by vmail ({VMAIL_UID}): owner and mode {owner or '?'}",
                f"the dovecot container sets it at start: `docker compose -p {stack.settings.project} restart "
                f"dovecot` (or chown {VMAIL_UID}:{VMAIL_GID} {MAIL_DIR})")


# --- running them -----------------------------------------------------------------------------

def guarded(name: str, check: Callable[[], Result | list[Result]]) -> list[Result]:
    """Run a check; a command that could not even run is that check's failure, not a traceback."""
    try:
        outcome = check()
    except (MailstackError, subprocess.TimeoutExpired, OSError) as exc:
        message = exc.message if isinstance(exc, MailstackError) else str(exc)
        hint = exc.hint if isinstance(exc, MailstackError) else None
        return [fail(name, tail(message, 2), hint or "`mailstack status`, `mailstack logs`")]
    return outcome if isinstance(outcome, list) else [outcome]


def run(stack: Stack, user: str | None = None) -> list[Result]:
    """All checks, in a fixed order (independent ones run concurrently)."""
    running = running_services(stack)
    if not running:
        raise StackNotRunning(stack.settings.project)
    flavour = schema.flavour(stack.settings.schema_flavour)
    if "mysql" in running:
        subjects = find_subjects(stack, user)
    else:
        subjects = Subjects(domain=domain_of(user) if user else None, user=user, error="mysql is not running")
    planned: list[tuple[str, str | None, Callable[[], Result | list[Result]]]] = [
        ("postfix check", "postfix", lambda: check_postfix_config(stack)),
        ("maps", "postfix", lambda: check_maps(stack, subjects, flavour)),
        (f"database ({schema.MAIL_READER})", "postfix", lambda: check_map_credentials(stack, subjects, flavour)),
        ("dovecot user", "dovecot", lambda: check_dovecot_user(stack, subjects)),
        ("password hashes", "dovecot", lambda: check_password_hashes(stack, subjects)),
        ("sockets", "postfix", lambda: check_sockets(stack)),
        ("chroot", "postfix", lambda: check_chroot(stack)),
        ("tls", None, lambda: check_tls(stack, running)),
        ("mailbox dir", "dovecot", lambda: check_mailbox_dir(stack)),
    ]

    def one(name: str, service: str | None, check: Callable[[], Result | list[Result]]) -> list[Result]:
        if service is not None and service not in running:
            return [skip(name, f"{service} is not running")]
        return guarded(name, check)

    with ThreadPoolExecutor(max_workers=len(planned)) as pool:
        futures = [pool.submit(one, *item) for item in planned]
        checked = [result for future in futures for result in future.result()]
    return [check_containers(running, stack.services), check_database(subjects), *checked]
