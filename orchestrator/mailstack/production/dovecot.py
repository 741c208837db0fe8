"""Dovecot: `doveconf -n` output or a dovecot.conf with its conf.d includes, parsed into a tree, and the
rules that turn production's settings into a config the stack includes after its own."""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path

from mailstack.production.maps import unquote
from mailstack.production.model import Dropped, Kept, ProductionInputError, Rewritten

STACK_SQL_FILE = "/etc/dovecot/dovecot-sql.conf.ext"
STACK_PROTOCOLS = ("imap", "pop3", "lmtp", "sieve")  # sieve: ManageSieve on 4190
STACK_VALUES = {
    "mail_uid": "vmail", "mail_gid": "vmail", "first_valid_uid": "5000", "last_valid_uid": "5000",
    "first_valid_gid": "5000", "last_valid_gid": "5000",
}
TLS_FILES = {"ssl_cert": "</run/mailstack/tls/server.crt", "ssl_key": "</run/mailstack/tls/server.key",
             "ssl_ca": "</run/mailstack/tls/ca.crt"}
TLS_DROPS = {
    "ssl_dh": "the DH parameter file is not in the stack (ECDHE ciphers are used)",
    "ssl_alt_cert": "the stack has one certificate", "ssl_alt_key": "the stack has one certificate",
    "ssl_client_ca_dir": "client certificates are not checked in the stack",
    "ssl_client_ca_file": "client certificates are not checked in the stack",
    "ssl_key_password": "the stack's key has no password",
}
LOG_PATHS = {"log_path": "/dev/stderr", "info_log_path": "/dev/stdout", "debug_log_path": "/dev/stdout"}
AVAILABLE_PLUGINS = frozenset({
    "acl", "apparmor", "mail_lua", "imap_acl", "lazy_expunge", "mail_crypt_acl", "pop3_migration", "last_login",
    "mail_crypt", "quota", "imap_quota", "trash", "notify", "charset_alias", "fts", "listescape", "mail_log",
    "mailbox_alias", "notify_status", "push_notification", "quota_clone", "replication", "var_expand_crypt",
    "virtual", "zlib", "fts_squat", "push_notification_lua", "imap_zlib", "old_stats", "imap_old_stats", "welcome",
    "sieve",  # Pigeonhole (dovecot-sieve), at LMTP delivery
})
SECRET_KEY = re.compile(r"pass(word)?$|secret", re.IGNORECASE)
# Sections whose settings are free-form or the stack's own, not checked against the settings list.
FREE_FORM = frozenset({"plugin", "dict", "namespace", "mailbox", "map", "fields", "inet_listener",
                       "unix_listener", "fifo_listener"})


@dataclass
class Node:
    """A setting (`value` set) or a section (`children`), with where it was written."""

    key: str
    file: Path
    line: int
    value: str | None = None
    name: str = ""
    children: list[Node] = field(default_factory=list)

    @property
    def is_section(self) -> bool:
        return self.value is None

    @property
    def label(self) -> str:
        return f"{self.key}/{self.name}" if self.name else self.key


@cache
def known_settings() -> frozenset[str]:
    text = resources.files("mailstack.production").joinpath("dovecot_settings.txt").read_text()
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def _strip_comment(line: str) -> str:
    quote: str | None = None
    for index, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "\"'":
            quote = char
        elif char == "#":
            return line[:index]
    return line


_SETTING = re.compile(r"^([A-Za-z0-9_/.-]+)\s*=\s*(.*)$")
_SECTION = re.compile(r"^([A-Za-z0-9_-]+)(?:\s+(\"[^\"]*\"|\S+))?\s*\{$")
_INCLUDE = re.compile(r"^!(include|include_try)\s+(.+)$")


def logical_lines(path: Path, text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw.strip()).strip() if not pending else raw.strip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        joined = " ".join(part for part in pending if part).strip()
        pending = []
        if joined:
            lines.append((start, joined))
    return lines


@dataclass
class ParsedConfig:
    root: Path
    nodes: list[Node]
    files: list[Path]  # every file read, the root first
    warnings: list[str]


def _resolve_include(pattern: str, including: Path, root_dir: Path) -> list[Path]:
    pattern = unquote(pattern.strip())
    candidates = [including.parent / pattern] if not pattern.startswith("/") else []
    if pattern.startswith("/"):
        relative = pattern.removeprefix("/etc/dovecot/")
        candidates += [root_dir / relative, including.parent / Path(pattern).name]
    for candidate in candidates:
        matches = sorted(Path(p) for p in glob.glob(str(candidate)))
        if matches:
            return [m for m in matches if m.is_file()]
    return []


def parse_dovecot(path: Path) -> ParsedConfig:
    files: list[Path] = []
    warnings: list[str] = []
    nodes = _parse_file(path, path.parent, files, warnings, depth=0)
    return ParsedConfig(path, nodes, files, warnings)


def _parse_file(path: Path, root_dir: Path, files: list[Path], warnings: list[str], depth: int) -> list[Node]:
    if depth > 20:
        raise ProductionInputError(f"{path}:1: includes nested too deep (a loop?)", None)
    files.append(path)
    text = path.read_text(encoding="utf-8", errors="replace")
    top: list[Node] = []
    stack: list[list[Node]] = [top]
    opened: list[int] = []
    for number, line in logical_lines(path, text):
        include = _INCLUDE.match(line)
        if include:
            targets = _resolve_include(include.group(2), path, root_dir)
            if not targets and include.group(1) == "include":
                warnings.append(f"{path}:{number}: !include {include.group(2)}: not found next to it in DIR")
            for target in targets:
                stack[-1].extend(_parse_file(target, root_dir, files, warnings, depth + 1))
            continue
        if line == "}":
            if len(stack) == 1:
                raise ProductionInputError(f"{path}:{number}: `}}` closes no section", None)
            stack.pop()
            opened.pop()
            continue
        section = _SECTION.match(line)
        if section:
            node = Node(section.group(1), path, number, name=unquote(section.group(2) or ""))
            stack[-1].append(node)
            stack.append(node.children)
            opened.append(number)
            continue
        setting = _SETTING.match(line)
        if setting:
            stack[-1].append(Node(setting.group(1), path, number, value=setting.group(2).strip()))
            continue
        raise ProductionInputError(
            f"{path}:{number}: not a Dovecot setting, section or include: {line[:60]!r}",
            "fix the line in the copied file (or remove it) and run again",
        )
    if opened:
        raise ProductionInputError(f"{path}:{opened[-1]}: this section is never closed", None)
    return top


def looks_like_dovecot(text: str) -> int:
    """A score: how many lines look like Dovecot's (known settings, sections, includes)."""
    score = 0
    known = known_settings()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("!include", "!include_try")) or _SECTION.match(line):
            score += 2
        else:
            match = _SETTING.match(line)
            if match and match.group(1) in known:
                score += 1
    return score


# --- rules ---------------------------------------------------------------------------------------------

@dataclass
class DovecotOutcome:
    kept: list[Kept] = field(default_factory=list)
    rewritten: list[Rewritten] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    config: list[str] = field(default_factory=list)
    mail_location: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    userdb_fields: list[str] = field(default_factory=list)


def show(key: str, value: str) -> str:
    return "***" if SECRET_KEY.search(key) and value else value


def render(node: Node, indent: int = 0) -> list[str]:
    pad = "  " * indent
    if not node.is_section:
        return [f"{pad}{node.key} = {node.value}"]
    name = f' "{node.name}"' if node.name and " " in node.name else (f" {node.name}" if node.name else "")
    lines = [f"{pad}{node.key}{name} {{"]
    for child in node.children:
        lines += render(child, indent + 1)
    return lines + [f"{pad}}}"]


def _section_text(node: Node) -> str:
    return " ".join(line.strip() for line in render(node))


def _filter_plugins(value: str) -> tuple[str, list[str]]:
    words = value.split()
    kept = [w for w in words if w.startswith("$") or w in AVAILABLE_PLUGINS]
    return " ".join(kept), [w for w in words if w not in kept]


def _setting_rule(node: Node, label: str, out: DovecotOutcome) -> str | None:
    """The value to write for a setting (None: not written)."""
    assert node.value is not None
    key, value = node.key, node.value
    shown = show(key, value)
    if key in STACK_VALUES:
        out.rewritten.append(Rewritten(label, value, STACK_VALUES[key], "mail belongs to the stack's vmail user"))
        return None
    if key in TLS_FILES:
        if value == TLS_FILES[key]:
            out.kept.append(Kept(label, value))
        else:
            out.rewritten.append(Rewritten(label, value, TLS_FILES[key], "the stack's CA-signed certificate"))
        return TLS_FILES[key]
    if key in TLS_DROPS:
        out.dropped.append(Dropped(label, value, TLS_DROPS[key]))
        return None
    if key in LOG_PATHS:
        if value == LOG_PATHS[key]:
            out.kept.append(Kept(label, value))
        else:
            out.rewritten.append(Rewritten(label, value, LOG_PATHS[key], "the stack logs to the container's output"))
        return LOG_PATHS[key]
    if key == "listen":
        if value != "*":
            out.rewritten.append(Rewritten(label, value, "*", "the container listens on its own IPv4 interfaces"))
        else:
            out.kept.append(Kept(label, value))
        return "*"
    if key == "protocols":
        wanted = unquote(value).split()
        if "$protocols" in wanted:  # Debian's protocols.d adds to the default: the stack's own
            index = wanted.index("$protocols")
            wanted[index:index + 1] = list(STACK_PROTOCOLS)
        kept = [p for p in wanted if p in STACK_PROTOCOLS]
        for other in (p for p in wanted if p not in STACK_PROTOCOLS and not p.startswith("$")):
            out.warnings.append(f"dovecot protocol {other} dropped: not in the stack (no {other} service)")
        kept += [p for p in STACK_PROTOCOLS if p not in kept]
        final = " ".join(kept)
        if final == unquote(value).strip():
            out.kept.append(Kept(label, value))
        else:
            out.rewritten.append(Rewritten(label, value, final,
                                           "the stack serves imap and pop3 (its IMAPS/POP3S endpoints) and delivers "
                                           "by lmtp; no other protocol is in it"))
        return final
    if key == "mail_plugins":
        final, missing = _filter_plugins(value)
        if missing:
            out.rewritten.append(Rewritten(label, value, final, f"plugins not in the stack: {' '.join(missing)}"))
            out.warnings.append(f"dovecot {label}: plugins {' '.join(missing)} not in the stack: not loaded")
        else:
            out.kept.append(Kept(label, value))
        return final
    if key not in known_settings():
        out.dropped.append(Dropped(label, shown, "unknown Dovecot setting (a typo, or newer than Dovecot 2.3)"))
        out.warnings.append(f"unknown Dovecot setting `{label}` = {shown}: not applied")
        return None
    if key == "mail_location":
        out.mail_location = value
    out.kept.append(Kept(label, shown))
    return value


def _section_rule(node: Node, out: DovecotOutcome, counters: dict[str, int]) -> list[str]:
    label = node.label
    if node.key in ("passdb", "userdb"):
        counters[node.key] = counters.get(node.key, 0) + 1
        label = f"{node.key}[{counters[node.key]}]" if not node.name else label
        settings = {child.key: child.value or "" for child in node.children if not child.is_section}
        driver = settings.get("driver", "")
        if node.key == "userdb":
            for key in ("default_fields", "override_fields"):
                if settings.get(key):
                    out.userdb_fields.append(settings[key])
        if driver == "sql":
            out.rewritten.append(Rewritten(label, _section_text(node), f"driver = sql, args = {STACK_SQL_FILE}",
                                           "the stack's own sql passdb/userdb on the rendered SQL file"))
        else:
            out.dropped.append(Dropped(label, _section_text(node), f"driver {driver or '?'} is not in the stack"))
            if driver not in ("static", "prefetch"):
                out.warnings.append(f"dovecot {label} (driver {driver}) dropped: those logins do not work locally")
        return []
    if node.key == "service":
        out.dropped.append(Dropped(label, _section_text(node), "the stack's own listeners and sockets"))
        return []
    if node.key in ("local", "remote"):
        out.dropped.append(Dropped(label, _section_text(node), "addresses differ in the stack"))
        return []
    if node.key == "dict":
        out.dropped.append(Dropped(label, _section_text(node), "dict backends are not in the stack"))
        if node.children:
            out.warnings.append(f"dovecot {label} dropped: dict-backed features (e.g. a quota dict) do not work")
        return []
    if node.key == "protocol":
        if node.name not in STACK_PROTOCOLS:
            out.dropped.append(Dropped(label, _section_text(node), f"protocol {node.name} is not in the stack"
                                       + (" (it delivers by LMTP)" if node.name == "lda" else "")))
            if node.name == "lda" and node.children:
                out.warnings.append("dovecot protocol lda dropped: the stack delivers by LMTP; settings meant "
                                    "for deliveries belong in protocol lmtp")
            return []
        lines = [f"protocol {node.name} {{"]
        for child in node.children:
            if child.is_section:
                lines += ["  " + line for line in render(child)]
            else:
                value = _setting_rule(child, f"{label}/{child.key}", out)
                if value is not None:
                    lines.append(f"  {child.key} = {value}")
        return lines + ["}"]
    if node.key == "plugin":
        node = _stack_quota_backends(node, label, out)
    out.kept.append(Kept(label, " ".join(
        line.strip() if "=" not in line else _mask_line(line.strip()) for line in render(node))))
    return render(node)


QUOTA_ROOT = re.compile(r"^quota\d*$")
STACK_QUOTA = "maildir:User quota"  # images/dovecot/dovecot.conf: Maildir++ quota, limits from quota_rule


def _stack_quota_backends(node: Node, label: str, out: DovecotOutcome) -> Node:
    """A quota root kept in a dict (a proxy to SQL, redis, ...) needs the dict service the stack has not:
    it becomes the stack's Maildir++ quota (the limits still come from production's quota_rule)."""
    children = []
    for child in node.children:
        if not child.is_section and QUOTA_ROOT.match(child.key) and (child.value or "").startswith("dict:"):
            out.rewritten.append(Rewritten(f"{label}/{child.key}", child.value or "", STACK_QUOTA,
                                           "its dict backend is not in the stack; usage is counted in the maildirs"))
            child = replace(child, value=STACK_QUOTA)
        children.append(child)
    return replace(node, children=children)


def _mask_line(line: str) -> str:
    key, _, value = line.partition("=")
    return f"{key.strip()} = {show(key.strip(), value.strip())}"


def apply_rules(nodes: list[Node]) -> DovecotOutcome:
    out = DovecotOutcome()
    counters: dict[str, int] = {}
    for node in nodes:
        if node.is_section:
            out.config += _section_rule(node, out, counters)
        else:
            value = _setting_rule(node, node.key, out)
            out.settings[node.key] = node.value or ""
            if value is not None:
                out.config.append(f"{node.key} = {value}")
    return out


_PATH_PREFIX = re.compile(r"^(?:[a-z0-9]+:)?(/[^:%]*)")


def static_root(location: str) -> str | None:
    """The path before the first % variable: maildir:/var/vmail/%d/%n -> /var/vmail."""
    match = _PATH_PREFIX.match(location.strip())
    if not match:
        return None
    path = match.group(1)
    if "%" in location.split(":", 1)[-1] and not path.endswith("/"):
        path = path.rsplit("/", 1)[0]
    path = path.rstrip("/")
    return path or None


_QUOTED_HOME = re.compile(r"'(/[^']*)'[^,]*?\bAS\s+home\b|CONCAT\(\s*'(/[^']*)'[^)]*\)\s+AS\s+home\b",
                          re.IGNORECASE)


def root_from_query(query: str | None) -> str | None:
    if not query:
        return None
    match = _QUOTED_HOME.search(query)
    if not match:
        return None
    return static_root(match.group(1) or match.group(2))
