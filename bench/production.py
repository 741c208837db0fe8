"""Figures for issue 11: a production copy at size (`MailStack(from_production=DIR)`).

Generates a PostfixAdmin production folder: the sample folder's postconf, master.cf, doveconf, map files and
dovecot-sql.conf, and a mysqldump-style dump.sql.gz (the sample dump's DDL and header, extended INSERTs of
at most --insert-bytes as mysqldump's net_buffer_length makes them) of --domains domains, --mailboxes
mailboxes (each with its self-alias row, as PostfixAdmin writes it) and --aliases further alias rows
(forwards, multi-target lists, postmaster@ and catch-alls; PostfixAdmin's own alias count leaves the
self-aliases out), plus --alias-domains alias domains. Password hashes: a handful of real `$1$` hashes made
once with `doveadm pw -s MD5-CRYPT`, reused across rows (hashing is not what is measured).

Then prints, in one run:
- the dump's size, the plan's read (MailStack's constructor: one parse of the dump for its counts), and
  start() to ready split by the report's phases (containers until MariaDB answers, dump load, the rest),
  rows/s loaded;
- Postfix lookups over each production map: `postmap -q KEY mysql:MAP` in the Postfix container per key
  (process start + MySQL connect + query, timed inside the container), and `postmap -q - mysql:MAP < keys`
  (one process, one connection: per-lookup cost), over random existing and missing keys;
- IMAP login + logout (IMAPClient over TLS verified against the stack's CA, Dovecot's auth cache flushed
  before each) for random users, and the same on the plain sample folder (alice) as a baseline: this
  machine's speed moves 2-3x between days, the ratio is the figure.
Asserts nothing. Usage: python bench/production.py [--domains N] [--mailboxes N] [--aliases N]
  [--lookups N] [--logins N] [--keep-dir DIR]
"""

from __future__ import annotations

import argparse
import gzip
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from fixtures import Phases  # bench/ is on sys.path when run as bench/production.py
from fixtures import load as load_average
from imapclient import IMAPClient
from mailstack.api import MailStack
from mailstack.stack import Stack

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "samples" / "production" / "postfixadmin"
PASSWORDS = [f"bench-pass-{n}" for n in range(4)]
STAMP = "'2024-01-10 10:00:00'"
NEVER = "'2000-01-01 00:00:00'"
INSERT = re.compile(r"^INSERT INTO `(\w+)` VALUES ")
SAMPLE_PASSWORDS = {"alice": "alice-pass-1"}  # the sample's one user who can log in (bob's $6$ is the bug)
PLACEHOLDER = re.compile(r"\{(?P<scheme>[A-Z0-9-]+)\}HASH-OF-(?P<name>[a-z]+)")


# --- the production folder ---------------------------------------------------------------------------

def doveadm_pw(password: str, scheme: str = "MD5-CRYPT") -> str:
    """PostfixAdmin's md5crypt as it stores it: `$1$...`, no {SCHEME} prefix."""
    image = f"mailstack-dovecot:{Stack(MailStack().settings).tag}"
    made = subprocess.run(["docker", "run", "--rm", "--entrypoint", "doveadm", image, "pw", "-s", scheme,
                           "-p", password], capture_output=True, text=True, check=True).stdout.strip()
    return made.split("}", 1)[1]


def quoted(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Data:
    """The rows, as tuples of SQL literals, and what the measurements pick keys from."""

    def __init__(self, domains: int, mailboxes: int, aliases: int, alias_domains: int, rng: random.Random) -> None:
        hashes = [doveadm_pw(password) for password in PASSWORDS]
        self.domains = [f"d{n:04d}.example" for n in range(domains)]
        self.alias_domains = {f"a{n:04d}.example": self.domains[n] for n in range(min(alias_domains, domains))}
        self.users: list[tuple[str, str]] = []  # active (address, password)
        self.inactive: list[str] = []
        self.forwards: list[str] = []
        self.rows: dict[str, list[str]] = {name: [] for name in ("domain", "mailbox", "alias", "alias_domain",
                                                                 "quota2")}
        self.rows["domain"].append(f"('ALL','',0,0,0,0,'',0,{STAMP},{STAMP},1)")
        for domain in [*self.domains, *self.alias_domains]:
            description = f"Alias domain of {self.alias_domains[domain]}" if domain in self.alias_domains else domain
            self.rows["domain"].append(f"({quoted(domain)},{quoted(description)},0,0,0,0,'virtual',0,"
                                       f"{STAMP},{STAMP},1)")
        for target in self.alias_domains.items():
            self.rows["alias_domain"].append(f"({quoted(target[0])},{quoted(target[1])},{STAMP},{STAMP},1)")
        by_domain: dict[str, list[str]] = {domain: [] for domain in self.domains}
        for n in range(mailboxes):
            domain = self.domains[n % domains]
            local = f"user{n // domains:05d}"
            address = f"{local}@{domain}"
            active = 0 if n % 100 == 99 else 1
            which = n % len(PASSWORDS)
            name = quoted(f"User {n} O'Test")  # a quote escaped as mysqldump does
            self.rows["mailbox"].append(
                f"({quoted(address)},{quoted(hashes[which])},{name},"
                f"{quoted(f'{domain}/{local}/')},0,{quoted(local)},{quoted(domain)},{STAMP},{STAMP},{active},"
                f"'','','',{NEVER},{NEVER})")
            self.rows["alias"].append(f"({quoted(address)},{quoted(address)},{quoted(domain)},{STAMP},{STAMP},"
                                      f"{active})")
            if active:
                self.users.append((address, PASSWORDS[which]))
                by_domain[domain].append(address)
            else:
                self.inactive.append(address)
            if n % 20 == 0:
                self.rows["quota2"].append(f"({quoted(address)},{rng.randrange(1 << 24)},{rng.randrange(500)})")
        extra = 0
        for n, domain in enumerate(self.domains):
            if extra >= aliases:
                break
            members = by_domain[domain] or [f"nobody@{domain}"]
            special = [(f"postmaster@{domain}", members[0])]
            if n % 10 == 0:
                special.append((f"@{domain}", members[-1]))  # a catch-all
            for source, goto in special[: aliases - extra]:
                self.rows["alias"].append(f"({quoted(source)},{quoted(goto)},{quoted(domain)},{STAMP},{STAMP},1)")
                self.forwards.append(source)
                extra += 1
        n = 0
        while extra < aliases:
            domain = self.domains[n % domains]
            members = by_domain[domain] or [f"nobody@{domain}"]
            goto = ",".join(rng.sample(members, min(len(members), 1 + (n % 7 == 0) * 2)))
            source = f"fwd{n // domains:05d}@{domain}"
            self.rows["alias"].append(f"({quoted(source)},{quoted(goto)},{quoted(domain)},{STAMP},{STAMP},1)")
            self.forwards.append(source)
            extra += 1
            n += 1
        self.in_key_order()

    def in_key_order(self) -> None:
        """As mysqldump writes them: each table's rows in primary key order (its clustered index)."""
        for rows in self.rows.values():
            rows.sort(key=lambda row: row[1:row.index("',")].lower())  # the first column, a quoted key

    def counts(self) -> dict[str, int]:
        return {table: len(rows) for table, rows in self.rows.items()}


def extended_inserts(table: str, rows: Sequence[str], limit: int) -> Iterator[str]:
    """mysqldump's extended INSERTs: as many rows per statement as fit in about `limit` bytes."""
    head = f"INSERT INTO `{table}` VALUES "  # noqa: S608 (our own generated rows, written to a file)
    batch: list[str] = []
    size = len(head)
    for row in rows:
        if batch and size + len(row) + 1 > limit:
            yield head + ",".join(batch) + ";\n"
            batch, size = [], len(head)
        batch.append(row)
        size += len(row) + 1
    if batch:
        yield head + ",".join(batch) + ";\n"


def write_folder(target: Path, data: Data, insert_bytes: int) -> Path:
    """The sample folder with the generated dump instead of its dump.sql."""
    shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns("dump.sql", "README.txt"))
    dump = target / "dump.sql.gz"
    with gzip.open(dump, "wt", encoding="utf-8", compresslevel=6) as out:
        for line in (SAMPLE / "dump.sql").read_text().splitlines(keepends=True):
            match = INSERT.match(line)
            if match is None:
                out.write(line)
                continue
            for statement in extended_inserts(match.group(1), data.rows[match.group(1)], insert_bytes):
                out.write(statement)
    return dump


def sample_with_real_hashes(target: Path) -> Path:
    """The plain sample folder, alice's placeholder made a real MD5-CRYPT hash (the baseline)."""
    shutil.copytree(SAMPLE, target)
    dump = target / "dump.sql"
    dump.write_text(PLACEHOLDER.sub(lambda m: doveadm_pw(SAMPLE_PASSWORDS.get(m["name"], "unused-" + m["name"]),
                                                         m["scheme"]), dump.read_text()))
    return target


# --- measuring ---------------------------------------------------------------------------------------

def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def spread_ms(values: Sequence[float]) -> str:
    return (f"p50 {statistics.median(values) * 1000:.2f} ms, p99 {percentile(values, 0.99) * 1000:.2f} ms "
            f"(max {max(values) * 1000:.2f}, n={len(values)})")


# Inside the Postfix container: bash's $EPOCHREALTIME costs no process, so what is timed is postmap alone.
PER_PROCESS = r"""
map=$1
while IFS= read -r key; do
  s=$EPOCHREALTIME; postmap -q "$key" "mysql:$map" >/dev/null; e=$EPOCHREALTIME
  echo "${s/[.,]/} ${e/[.,]/}"
done
"""
ONE_PROCESS = r"""
map=$1; keys=$(cat); one=${keys%%$'\n'*}
for run in 1 2 3; do
  s=$EPOCHREALTIME; postmap -q - "mysql:$map" <<<"$one" >/dev/null; e=$EPOCHREALTIME
  echo "1 ${s/[.,]/} ${e/[.,]/}"
  s=$EPOCHREALTIME; postmap -q - "mysql:$map" <<<"$keys" >/dev/null; e=$EPOCHREALTIME
  echo "n ${s/[.,]/} ${e/[.,]/}"
done
"""


def per_process(stack: MailStack, path: str, keys: Sequence[str]) -> list[float]:
    out = stack.stack.exec("postfix", ["bash", "-c", PER_PROCESS, "bench", path],
                           input="".join(f"{key}\n" for key in keys).encode()).stdout.decode()
    return [(int(end) - int(start)) / 1e6 for start, end in (line.split() for line in out.splitlines())]


def one_process(stack: MailStack, path: str, keys: Sequence[str]) -> tuple[float, float]:
    """(one key's run, the per-lookup cost): medians over three runs of 1 key and of all keys."""
    out = stack.stack.exec("postfix", ["bash", "-c", ONE_PROCESS, "bench", path],
                           input="\n".join(keys).encode()).stdout.decode()
    runs: dict[str, list[float]] = {"1": [], "n": []}
    for line in out.splitlines():
        kind, start, end = line.split()
        runs[kind].append((int(end) - int(start)) / 1e6)
    single, many = statistics.median(runs["1"]), statistics.median(runs["n"])
    return single, (many - single) / max(1, len(keys) - 1)


def map_keys(name: str, data: Data, rng: random.Random, count: int) -> tuple[list[str], list[str]]:
    """(existing keys, missing keys) for one of PostfixAdmin's maps."""
    missing_count = max(1, count // 5)
    addresses = [address for address, _ in rng.sample(data.users, count)]
    local_parts = [address.split("@")[0] for address in addresses]
    if "domains" in name:
        existing = rng.sample(data.domains, min(count, len(data.domains)))
        missing = [f"missing{n}.example" for n in range(missing_count)]
    elif "alias_domain" in name:
        alias_of = {target: alias for alias, target in data.alias_domains.items()}
        with_alias = [a for a, _ in data.users if a.split("@")[1] in alias_of]
        picked = rng.sample(with_alias, min(count, len(with_alias)))
        if "catchall" in name:  # %d: any address at an alias domain whose target has a catch-all
            targets = [t for t in alias_of if f"@{t}" in data.forwards]
            existing = [f"x{n}@{alias_of[rng.choice(targets)]}" for n in range(count)] if targets else []
        else:
            existing = [f"{a.split('@')[0]}@{alias_of[a.split('@')[1]]}" for a in picked]
        missing = [f"nobody{n}@{rng.choice(list(data.alias_domains))}" for n in range(missing_count)]
    elif "alias" in name:
        half = count // 2
        existing = addresses[:half] + rng.sample(data.forwards, min(count - half, len(data.forwards)))
        missing = [f"{part}x@{rng.choice(data.domains)}" for part in local_parts[:missing_count]]
    else:  # mailbox maps
        existing = addresses
        missing = [f"{part}x@{rng.choice(data.domains)}" for part in local_parts[:missing_count]]
    return existing, missing


def postfix_rows(stack: MailStack, data: Data, rng: random.Random, count: int) -> list[tuple[str, str, str]]:
    listed = set(stack.stack.exec("postfix", ["ls", "/etc/postfix/sql"]).stdout.decode().split())
    production = sorted(path.name for path in (SAMPLE / "sql").glob("*.cf"))  # not the stack's own maps
    rows: list[tuple[str, str, str]] = []
    for file in [name for name in production if name in listed]:
        path = f"/etc/postfix/sql/{file}"
        existing, missing = map_keys(file, data, rng, count)
        keys = existing + missing
        rng.shuffle(keys)
        hits = stack.stack.exec("postfix", ["postmap", "-q", "-", f"mysql:{path}"],
                                input="\n".join(keys).encode()).stdout.decode().count("\n")
        timings = per_process(stack, path, keys)
        single, per_lookup = one_process(stack, path, keys)
        name = file.removeprefix("mysql_").removesuffix(".cf")
        rows.append((name, f"{len(existing)} existing + {len(missing)} missing keys ({hits} answered)", ""))
        rows.append(("", "postmap -q KEY, one process per key", spread_ms(timings)))
        rows.append(("", "postmap -q - < keys, one process, one connection",
                     f"{per_lookup * 1000:.3f} ms per lookup (1-key run {single * 1000:.1f} ms)"))
    return rows


def imap_logins(stack: MailStack, users: Sequence[tuple[str, str]]) -> tuple[list[float], list[float]]:
    """(TCP + TLS connect, login + logout) per user, each an auth cache miss: Dovecot's auth cache is
    emptied before each (untimed). The first user logs in once untimed first (auth workers start)."""
    endpoint = stack.endpoints.imaps
    context = stack.ssl_context()
    connects: list[float] = []
    logins: list[float] = []
    for number, (address, password) in enumerate([users[0], *users]):
        stack.stack.exec("dovecot", ["doveadm", "auth", "cache", "flush"])
        started = time.perf_counter()
        client = IMAPClient(endpoint.host, port=endpoint.port, ssl=True, ssl_context=context, timeout=30)
        connected = time.perf_counter()
        client.login(address, password)
        client.logout()
        if number:
            logins.append(time.perf_counter() - connected)
            connects.append(connected - started)
    return connects, logins


def start_timed(folder: Path) -> tuple[MailStack, float, float, Phases]:
    """(the started stack, the constructor's seconds, start()'s seconds, its phases)."""
    started = time.perf_counter()
    phases = Phases()
    stack = MailStack(from_production=folder, report=phases)
    constructed = time.perf_counter() - started
    phases.started = time.perf_counter()
    stack.start()
    return stack, constructed, time.perf_counter() - phases.started, phases


def start_rows(label: str, constructed: float, took: float, phases: Phases, rows: int) -> list[tuple[str, str]]:
    containers = phases.first(lambda m: m == "starting containers") or 0.0
    load_start = phases.first(lambda m: m.startswith("loading "))
    loaded = phases.first(lambda m: m.startswith("loaded "))
    out = [(f"{label}: plan read (constructor: reads the folder, parses the dump once)", f"{constructed:.2f} s"),
           (f"{label}: start() to ready", f"{took:.2f} s")]
    if load_start is not None and loaded is not None:
        out += [(f"{label}:   prepare until `starting containers`", f"{containers:.2f} s"),
                (f"{label}:   containers until MariaDB answers", f"{load_start - containers:.2f} s"),
                (f"{label}:   dump load (Dovecot and Postfix start meanwhile)",
                 f"{loaded - load_start:.2f} s ({rows / max(loaded - load_start, 1e-9):,.0f} rows/s)"),
                (f"{label}:   the rest (readiness after the load)", f"{took - loaded:.2f} s")]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", type=int, default=1000)
    parser.add_argument("--mailboxes", type=int, default=100_000)
    parser.add_argument("--aliases", type=int, default=100_000, help="alias rows besides the self-aliases")
    parser.add_argument("--alias-domains", type=int, default=50)
    parser.add_argument("--insert-bytes", type=int, default=1_000_000,
                        help="extended INSERT size (mysqldump's net_buffer_length is about 1 MB)")
    parser.add_argument("--lookups", type=int, default=200, help="existing keys per map (and a fifth missing)")
    parser.add_argument("--logins", type=int, default=100, help="IMAP logins to time per stack")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--keep-dir", type=Path, help="write the production folders here and keep them")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = args.keep_dir or Path(tempfile.mkdtemp(prefix="mailstack-bench-production-"))
    work.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str]] = [("load average (1/5/15 min) before", load_average())]
    stacks: list[MailStack] = []
    try:
        started = time.perf_counter()
        data = Data(args.domains, args.mailboxes, args.aliases, args.alias_domains, rng)
        dump = write_folder(work / "production", data, args.insert_bytes)
        counts = data.counts()
        total_rows = sum(counts.values())
        with gzip.open(dump, "rb") as unpacked:
            raw = sum(len(chunk) for chunk in iter(lambda: unpacked.read(1 << 20), b""))
        rows += [("generated folder (hashes, rows, gzip)", f"{time.perf_counter() - started:.1f} s"),
                 ("rows", ", ".join(f"{table} {count:,}" for table, count in counts.items())
                  + f" (total {total_rows:,})"),
                 ("dump.sql.gz", f"{dump.stat().st_size / 1e6:.1f} MB ({raw / 1e6:.1f} MB of SQL)")]

        big, constructed, took, phases = start_timed(work / "production")
        stacks.append(big)
        rows += start_rows("production copy", constructed, took, phases, total_rows)
        small, constructed, took, phases = start_timed(sample_with_real_hashes(work / "sample"))
        stacks.append(small)
        rows += start_rows("plain sample", constructed, took, phases, 15)

        lookups = postfix_rows(big, data, rng, args.lookups)

        users = rng.sample(data.users, args.logins)
        big_connect, big_login = imap_logins(big, users)
        alice = [("alice@example.org", SAMPLE_PASSWORDS["alice"])] * args.logins
        small_connect, small_login = imap_logins(small, alice)
        ratio = statistics.median(big_login) / statistics.median(small_login)
        ratio99 = percentile(big_login, 0.99) / percentile(small_login, 0.99)
        logins = [
            ("IMAP login + logout, production copy (random users, auth cache flushed)", spread_ms(big_login)),
            ("IMAP login + logout, plain sample (auth cache flushed)", spread_ms(small_login)),
            ("  ratio production / sample", f"p50 {ratio:.2f}x, p99 {ratio99:.2f}x"),
            ("IMAP TCP + TLS connect, production copy", spread_ms(big_connect)),
            ("IMAP TCP + TLS connect, plain sample", spread_ms(small_connect)),
            ("load average (1/5/15 min) after", load_average()),
        ]
    finally:
        for stack in stacks:
            stack.stop()
        if args.keep_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    width = max(len(name) for name, _ in rows + logins)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print()
    print("Postfix lookups in the Postfix container (timed there, without docker exec)")
    widths = [max(len(row[i]) for row in lookups) for i in range(2)]
    for map_name, what, value in lookups:
        print(f"  {map_name:<{widths[0]}}  {what:<{widths[1]}}  {value}")
    print()
    for name, value in logins:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
