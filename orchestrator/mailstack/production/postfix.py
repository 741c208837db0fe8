"""Postfix: main.cf (or `postconf -n`) and master.cf parsing, and the rules that turn production's settings
into what the stack applies with postconf."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path

from mailstack.production.model import Dropped, Kept, ProductionInputError, Rewritten, Setting

TLS_DIR = "/run/mailstack/tls"
STACK_CERT = f"{TLS_DIR}/server.crt"
STACK_KEY = f"{TLS_DIR}/server.key"
STACK_CA = f"{TLS_DIR}/ca.crt"
STACK_SQL_DIR = "/etc/postfix/sql"
STACK_LMTP = "lmtp:unix:private/dovecot-lmtp"
SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")

DEBIAN_PATHS = {
    "queue_directory": "/var/spool/postfix",
    "data_directory": "/var/lib/postfix",
    "daemon_directory": "/usr/lib/postfix/sbin",
    "command_directory": "/usr/sbin",
    "shlib_directory": "/usr/lib/postfix",
    "meta_directory": "/etc/postfix",
    "mail_owner": "postfix",
    "setgid_group": "postdrop",
    "manpage_directory": "/usr/share/man",
    "sample_directory": "/etc/postfix",
    "readme_directory": "/usr/share/doc/postfix",
    "html_directory": "/usr/share/doc/postfix/html",
}
DOCUMENTATION_PATHS = frozenset({"manpage_directory", "sample_directory", "readme_directory", "html_directory"})

TLS_REWRITES = {
    "smtpd_tls_cert_file": STACK_CERT,
    "smtpd_tls_key_file": STACK_KEY,
    "smtpd_tls_CAfile": STACK_CA,
    "smtp_tls_CAfile": STACK_CA,
    "lmtp_tls_CAfile": STACK_CA,
    "smtpd_tls_chain_files": f"{STACK_KEY}, {STACK_CERT}",
}
TLS_DROPS = {
    "smtpd_tls_CApath": "the stack trusts its own CA file",
    "smtp_tls_CApath": "the stack trusts its own CA file",
    "smtpd_tls_dcert_file": "the stack has one certificate (its CA-signed RSA one)",
    "smtpd_tls_dkey_file": "the stack has one certificate (its CA-signed RSA one)",
    "smtpd_tls_eccert_file": "the stack has one certificate (its CA-signed RSA one)",
    "smtpd_tls_eckey_file": "the stack has one certificate (its CA-signed RSA one)",
    "smtpd_tls_dh1024_param_file": "the DH parameter file is not in the stack; Postfix's built-in group is used",
    "smtpd_tls_dh512_param_file": "the DH parameter file is not in the stack; Postfix's built-in group is used",
    "smtp_tls_cert_file": "the client certificate is not in the stack",
    "smtp_tls_key_file": "the client certificate is not in the stack",
    "smtp_tls_chain_files": "the client certificate is not in the stack",
}
FORCED = {
    "virtual_transport": (STACK_LMTP, "the stack delivers to Dovecot by LMTP on its socket"),
    "smtpd_sasl_type": ("dovecot", "the stack authenticates SMTP clients through Dovecot"),
    "smtpd_sasl_path": ("private/auth", "Dovecot's auth socket in the stack"),
    "maillog_file": ("/dev/stdout", "the stack logs to the container's output"),
    "inet_interfaces": ("all", "the container listens on its own interfaces; Docker publishes the ports"),
}
EXTERNAL = {
    "relayhost": "outbound mail is not sent through the smarthost {value}: it goes to the recipients' MX "
                 "directly (or stays queued)",
    "content_filter": "mail is not passed through the content filter {value} (no spam/virus scanning)",
    "smtpd_milters": "mail received by SMTP is not passed through the milters {value} (e.g. no DKIM "
                     "signing or spam checks)",
    "non_smtpd_milters": "locally submitted mail is not passed through the milters {value}",
    "smtp_sasl_password_maps": "relay credentials are not used (the relayhost is dropped)",
}
SECRET_PARAMETERS = frozenset({"smtp_sasl_password_maps", "lmtp_sasl_password_maps"})
# Lookup tables read from a file on disk; their file must come from DIR.
FILE_TABLE_TYPES = frozenset({"hash", "btree", "lmdb", "cdb", "dbm", "sdbm", "regexp", "pcre", "cidr", "texthash"})
ALWAYS_PRESENT_TABLES = frozenset({"hash:/etc/aliases"})
NOT_LOOKUPS = re.compile(r"_cache_database$|_cache_map$|^address_verify_map$|^tls_random_source$")
# What the stack's image runs: its master.cf's commands plus the other daemons Postfix ships there.
AVAILABLE_COMMANDS = frozenset({
    "smtpd", "pickup", "cleanup", "qmgr", "nqmgr", "oqmgr", "tlsmgr", "trivial-rewrite", "bounce", "verify",
    "flush", "proxymap", "smtp", "showq", "error", "discard", "local", "virtual", "lmtp", "anvil", "scache",
    "postlogd", "postscreen", "dnsblog", "tlsproxy", "qmqpd",
})
FILTER_NAMES = re.compile(r"amavis|spamassassin|spamd|clamav|clamsmtp|dspam|dkim|mailscanner|scan|filter",
                          re.IGNORECASE)
# Security-relevant options the stack keeps on its own ports whatever production says.
STACK_SERVICE_OPTIONS = {
    "submission/inet": {"smtpd_tls_security_level": "encrypt", "smtpd_sasl_auth_enable": "yes",
                        "smtpd_tls_auth_only": "yes"},
    "smtps/inet": {"smtpd_tls_wrappermode": "yes", "smtpd_sasl_auth_enable": "yes"},
}
TRANSPORT_SUFFIXES_EXTRA = frozenset({"time_limit", "initial_destination_concurrency"})
LOOPBACK = re.compile(r"^(127(\.\d{1,3}){0,3}(/(8|9|[12]\d|3[0-2]))?|\[::1\](/128)?|\[::ffff:127\.0\.0\.0\]/104|"
                      r"::1(/128)?|localhost)$", re.IGNORECASE)


@cache
def known_parameters() -> frozenset[str]:
    text = resources.files("mailstack.production").joinpath("postfix_parameters.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


@cache
def transport_suffixes() -> frozenset[str]:
    return frozenset(name[len("default_"):] for name in known_parameters() if name.startswith("default_")) | \
        TRANSPORT_SUFFIXES_EXTRA


# --- master.cf -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MasterEntry:
    service: str
    type: str
    fields: tuple[str, str, str, str, str]  # private unpriv chroot wakeup maxproc
    command: str
    args: tuple[str, ...]  # command arguments other than -o
    options: tuple[tuple[str, str], ...]  # the -o name=value overrides, in order
    file: Path
    line: int

    @property
    def key(self) -> str:
        return f"{self.service}/{self.type}"

    def entry_text(self, options: Iterable[tuple[str, str]] | None = None) -> str:
        """The entry as `postconf -M` takes it (after `name/type=`)."""
        parts = [self.service, self.type, *self.fields, self.command, *self.args]
        for name, value in (self.options if options is None else options):
            parts += ["-o", f"{name}={value}" if " " not in value else f"{{ {name} = {value} }}"]
        return " ".join(parts)


_SERVICE_LINE = re.compile(r"^(\S+)\s+(inet|unix|unix-dgram|fifo|pass)\s+([-yn])\s+([-yn])\s+([-yn])\s+(\S+)\s+(\S+)"
                           r"\s+(\S+)(.*)$")


def looks_like_master(text: str) -> bool:
    services = others = 0
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#") or raw[0] in " \t":
            continue
        if _SERVICE_LINE.match(raw):
            services += 1
        else:
            others += 1
    return services >= 1 and services >= 2 * others


def _split_args(text: str, path: Path, line: int) -> list[str]:
    """master.cf arguments: whitespace separated, `{ ... }` groups one argument."""
    args: list[str] = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        if text[position] == "{":
            end = text.find("}", position)
            if end < 0:
                raise ProductionInputError(f"{path}:{line}: unbalanced `{{` in the service's arguments", None)
            args.append(text[position:end + 1])
            position = end + 1
            continue
        end = position
        while end < len(text) and not text[end].isspace():
            end += 1
        args.append(text[position:end])
        position = end
    return args


def _option(argument: str, path: Path, line: int) -> tuple[str, str]:
    if argument.startswith("{"):
        argument = argument[1:-1].strip()
    name, sep, value = argument.partition("=")
    if not sep:
        raise ProductionInputError(f"{path}:{line}: `-o {argument}` is not name=value", None)
    return name.strip(), value.strip()


def parse_master(path: Path, text: str | None = None) -> list[MasterEntry]:
    text = path.read_text(encoding="utf-8", errors="replace") if text is None else text
    logical: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if raw[0] in " \t":
            if not logical:
                raise ProductionInputError(f"{path}:{number}: a continuation line before any service", None)
            logical[-1] = (logical[-1][0], logical[-1][1] + " " + raw.strip())
        else:
            logical.append((number, raw.strip()))
    entries = []
    for number, line in logical:
        match = _SERVICE_LINE.match(line)
        if not match:
            raise ProductionInputError(
                f"{path}:{number}: not a master.cf service line: {line[:60]!r}",
                "a service line has 8 fields: service type private unpriv chroot wakeup maxproc command",
            )
        service, kind, *fields, command, rest = match.groups()
        args: list[str] = []
        options: list[tuple[str, str]] = []
        words = _split_args(rest, path, number)
        index = 0
        while index < len(words):
            if words[index] == "-o" and index + 1 < len(words):
                options.append(_option(words[index + 1], path, number))
                index += 2
            elif words[index].startswith("-o") and len(words[index]) > 2:
                options.append(_option(words[index][2:], path, number))
                index += 1
            else:
                args.append(words[index])
                index += 1
        entries.append(MasterEntry(service, kind, tuple(fields), command, tuple(args), tuple(options),  # type: ignore[arg-type]
                                   path, number))
    return entries


# --- the rules -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Context:
    """What the rules need to know besides the setting itself."""

    map_names: frozenset[str]  # stems of the mysql map files provided
    other_files: frozenset[str]  # base names of the other files in DIR
    transports: frozenset[str]  # service names of master.cf (production's and the stack's)
    user_parameters: frozenset[str]  # parameters referenced as $name, restriction classes


@dataclass
class Outcome:
    kept: list[Kept] = field(default_factory=list)
    rewritten: list[Rewritten] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # name -> value to apply (after rules), for postconf
    applied: dict[str, str] = field(default_factory=dict)


def is_known(name: str, context: Context) -> bool:
    if name in known_parameters() or name in context.user_parameters:
        return True
    for transport in context.transports:
        if name.startswith(transport + "_") and name[len(transport) + 1:] in transport_suffixes():
            return True
    return False


_REFERENCE = re.compile(r"\$\{?([A-Za-z0-9_]+)")


def referenced_parameters(values: Iterable[str]) -> set[str]:
    found: set[str] = set()
    for value in values:
        found.update(match.group(1) for match in _REFERENCE.finditer(value))
    return found


_LIST_SPLIT = re.compile(r"[\s,]+")
_TABLE = re.compile(r"^(?:proxy:)?([a-z0-9_]+):(\S+)$")


def _tokens(value: str) -> list[str]:
    """A list value's elements; `{ ... }` groups stay one element."""
    tokens: list[str] = []
    position = 0
    while position < len(value):
        if value[position] in " \t,":
            position += 1
            continue
        if value[position] == "{":
            end = value.find("}", position)
            end = len(value) - 1 if end < 0 else end
            tokens.append(value[position:end + 1])
            position = end + 1
            continue
        end = position
        while end < len(value) and value[end] not in " \t,":
            if value[end] == "{":
                close = value.find("}", end)
                end = len(value) if close < 0 else close
            end += 1
        tokens.append(value[position:end])
        position = end
    return tokens


def _table_rule(token: str, context: Context) -> tuple[str | None, str | None]:
    """(replacement or None to drop, why) for a table reference; (token, None) when unchanged."""
    if token in ALWAYS_PRESENT_TABLES:
        return token, None
    match = _TABLE.match(token)
    if not match:
        return token, None
    kind, location = match.groups()
    if kind == "mysql":
        stem = Path(location).name.removesuffix(".cf")
        if stem in context.map_names:
            target = f"mysql:{STACK_SQL_DIR}/{stem}.cf"
            return target, None if target == token else f"the stack installs the rendered map at {target}"
        return None, f"the map file {Path(location).name} was not provided"
    if kind in FILE_TABLE_TYPES:
        if Path(location).name in context.other_files:
            return token, None
        return None, f"the table file {location} was not provided"
    if kind in {"ldap", "pgsql", "sqlite", "memcache", "tcp", "socketmap", "nis", "nisplus", "netinfo"}:
        return None, f"{kind}: tables are not in the stack"
    return token, None


def rewrite_list(name: str, value: str, context: Context) -> tuple[str, list[str]]:
    """Table references rewritten or removed, check_policy_service elements removed (the rest kept)."""
    tokens = _tokens(value)
    kept: list[str] = []
    reasons: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token == "check_policy_service" and index + 1 < len(tokens):
            reasons.append(f"check_policy_service {tokens[index + 1]} removed: the policy service is not in the "
                           "stack, so its checks (e.g. greylisting, SPF, rate limits) are not done")
            index += 2
            continue
        replacement, why = _table_rule(token, context)
        if why is not None and replacement is None:
            if kept and kept[-1].startswith("check_") and kept[-1].endswith(("_access", "_maps")):
                removed = kept.pop()
                reasons.append(f"{removed} {token} removed: {why}")
            else:
                reasons.append(f"{token} removed: {why}")
        elif why is not None:
            reasons.append(why)
        if replacement is not None:
            kept.append(replacement)
        index += 1
    if not reasons:
        return value, []
    return ", ".join(kept), reasons


def _mask(name: str, value: str) -> str:
    return "***" if name in SECRET_PARAMETERS and value else value


def apply_rules(settings: Iterable[tuple[str, str]], context: Context, prefix: str = "") -> Outcome:
    """The main.cf rules over (name, value) pairs; `prefix` names master.cf -o overrides."""
    outcome = Outcome()
    for name, value in settings:
        label = prefix + name
        shown = _mask(name, value)

        def keep(final: str, *, label: str = label, name: str = name, shown: str = shown) -> None:
            outcome.kept.append(Kept(label, shown))
            outcome.applied[name] = final

        def change(final: str, why: str, *, label: str = label, name: str = name, shown: str = shown) -> None:
            outcome.rewritten.append(Rewritten(label, shown, final, why))
            outcome.applied[name] = final

        def drop(why: str, warn: bool = False, *, label: str = label, shown: str = shown) -> None:
            outcome.dropped.append(Dropped(label, shown, why))
            if warn:
                outcome.warnings.append(f"postfix {label} dropped: {why}")

        if not is_known(name, context):
            drop("unknown Postfix parameter (a typo, or newer than the stack's Postfix 3.7)")
            outcome.warnings.append(f"unknown Postfix parameter `{label}` = {shown}: not applied")
        elif name in TLS_REWRITES:
            target = TLS_REWRITES[name]
            keep(value) if value == target else change(target, "the stack's CA-signed certificate, key and CA")
        elif name in TLS_DROPS:
            drop(TLS_DROPS[name])
        elif name == "mynetworks":
            elements = _tokens(value)
            if elements and all(LOOPBACK.match(element) for element in elements):
                keep(value)
            else:
                drop("wider than loopback: locally every client connects from the Docker bridge gateway, so it "
                     "would make the stack an open relay (the stack's 127.0.0.0/8 stays)", warn=True)
        elif name in FORCED:
            target, why = FORCED[name]
            keep(value) if value == target else change(target, why)
        elif name == "inet_protocols":
            if value.strip() == "ipv4":
                keep(value)
            else:
                change("ipv4", "the stack's Docker network is IPv4 only")
        elif name in EXTERNAL:
            if not value.strip():
                keep(value)
            else:
                drop(EXTERNAL[name].format(value=shown), warn=True)
        elif name in DEBIAN_PATHS:
            debian = DEBIAN_PATHS[name]
            if value == debian or (name in DOCUMENTATION_PATHS and value == "no"):
                keep(value)
            else:
                change(debian, "the stack's image is Debian's Postfix: its paths and users")
        elif NOT_LOOKUPS.search(name):
            keep(value)
        else:
            final, reasons = rewrite_list(name, value, context)
            if not reasons:
                keep(value)
            elif not final.strip():
                drop("; ".join(reasons) + "; nothing left, the stack's value stays", warn=True)
            else:
                change(final, "; ".join(reasons))
                if any("removed" in reason for reason in reasons):
                    outcome.warnings.append(f"postfix {label}: " + "; ".join(r for r in reasons if "removed" in r))
    return outcome


def references(value: str, service: str) -> bool:
    """Whether a parameter value names a master.cf transport (`service:` or `service` alone)."""
    return any(token == service or token.startswith(service + ":") for token in _tokens(value))


def plan_master(
    production: list[MasterEntry], stack: list[MasterEntry], main_values: dict[str, str], context: Context
) -> tuple[Outcome, list[tuple[str, str]]]:
    """Production's master.cf over the stack's: (outcome, postconf commands)."""
    outcome = Outcome()
    commands: list[tuple[str, str]] = []
    stack_by_key = {entry.key: entry for entry in stack}
    all_values = list(main_values.values()) + [v for e in production for _, v in e.options]
    filters = {token.split(":")[0] for name in ("content_filter",) for token in [main_values.get(name, "")] if token}
    filters |= {v.split(":")[0] for e in production for n, v in e.options if n == "content_filter" and v}
    for entry in production:
        key = entry.key
        referenced = any(references(value, entry.service) for value in all_values)
        unavailable = entry.command not in AVAILABLE_COMMANDS
        is_filter = (entry.type == "unix" and (entry.service in filters or bool(FILTER_NAMES.search(entry.service)))
                     and entry.command in {"smtp", "lmtp"})
        reinjection = (entry.type == "inet" and ":" in entry.service and entry.command == "smtpd"
                       and ("content_filter", "") in entry.options)
        if unavailable or is_filter or reinjection:
            if unavailable:
                what = " ".join([entry.command, *entry.args])
                why = f"runs `{what}`, which the stack does not have"
            elif is_filter:
                why = "a content-filter transport (e.g. amavis): the filter is not in the stack"
            else:
                why = "the content filter's re-injection listener: the filter is not in the stack"
            outcome.dropped.append(Dropped(key, entry.entry_text(), why))
            if referenced or is_filter or reinjection:
                outcome.warnings.append(f"postfix master.cf {key} dropped: {why}")
            continue
        result = apply_rules(entry.options, context, prefix=key + "/")
        outcome.warnings += result.warnings
        outcome.dropped += result.dropped
        options = list(result.applied.items())
        stack_entry = stack_by_key.get(key)
        if key in STACK_SERVICE_OPTIONS and stack_entry is not None:
            forced = STACK_SERVICE_OPTIONS[key]
            kept_rewrites = []
            for rewrite in result.rewritten:
                option = rewrite.name.rsplit("/", 1)[1]
                if option in forced:
                    continue
                kept_rewrites.append(rewrite)
            outcome.rewritten += kept_rewrites
            for kept in result.kept:
                option = kept.name.rsplit("/", 1)[1]
                if option in forced and result.applied[option] != forced[option]:
                    outcome.rewritten.append(Rewritten(
                        kept.name, kept.value, forced[option],
                        f"the stack's {entry.service} port keeps its security settings"))
                else:
                    outcome.kept.append(kept)
            for option, value in options:
                final = forced.get(option, value)
                if dict(stack_entry.options).get(option) != final:
                    commands.append(("-P", f"{key}/{option}={final}"))
            continue
        outcome.kept += result.kept
        outcome.rewritten += result.rewritten
        merged = replace(entry, options=tuple(options))
        if stack_entry is not None and merged.entry_text() == stack_entry.entry_text():
            outcome.kept.append(Kept(key, entry.entry_text()))
            continue
        if options == list(entry.options):
            outcome.kept.append(Kept(key, entry.entry_text()))
        else:
            outcome.rewritten.append(Rewritten(key, entry.entry_text(), merged.entry_text(),
                                               "its -o overrides follow the main.cf rules"))
        commands.append(("-M", f"{key}={merged.entry_text()}"))
    return outcome, commands


def stack_master_cf() -> Path:
    """The stack's own master.cf (images/postfix/master.cf in the checkout or the wheel)."""
    from mailstack.settings import stack_files_dir

    return stack_files_dir() / "images" / "postfix" / "master.cf"


def check_main_text(path: Path, settings: list[Setting]) -> None:
    if not settings:
        raise ProductionInputError(f"{path}:1: no Postfix parameters in the file", None)
