"""make_plan: the rules applied to what read_dir found, as one frozen Plan the stack can act on."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailstack.production import dovecot, maps, postfix
from mailstack.production.detect import Sources
from mailstack.production.model import (
    MASK,
    DovecotSql,
    DumpStats,
    Kept,
    MapFile,
    Rewritten,
    ServicePlan,
)

STACK_MAIL_ROOT = "/var/mail/vmail"  # the mail volume in the Dovecot image

FLAVOUR_TABLES = (
    ("postfixadmin", frozenset({"domain", "mailbox", "alias", "alias_domain"}), frozenset({"domain", "mailbox",
                                                                                             "alias"})),
    ("virtual", frozenset({"virtual_domains", "virtual_users", "virtual_aliases"}),
     frozenset({"virtual_domains", "virtual_users", "virtual_aliases"})),
    ("default", frozenset({"domains", "users", "aliases"}), frozenset({"domains", "users", "aliases"})),
)
_PASSWORD_ASSIGNMENT = re.compile(r"(password\s*=\s*)(\"[^\"]*\"|'[^']*'|\S+)", re.IGNORECASE)


@dataclass(frozen=True)
class Plan:
    flavour: str
    postfix: ServicePlan
    postconf_commands: tuple[tuple[str, str], ...]
    dovecot: ServicePlan
    dovecot_config: str
    mail_root: str | None
    maps: tuple[MapFile, ...]
    dovecot_sql: DovecotSql | None
    dump: Path | None
    database: DumpStats | None
    hostname: str | None
    warnings: tuple[str, ...]
    userdb_override_fields: str | None = None
    secrets: frozenset[str] = frozenset()

    def mask(self, text: str) -> str:
        text = _PASSWORD_ASSIGNMENT.sub(lambda m: m.group(1) + MASK, text)
        for secret in sorted(self.secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        return text

    def _service(self, plan: ServicePlan) -> dict[str, Any]:
        return {
            "kept": {entry.name: self.mask(entry.value) for entry in plan.kept},
            "rewritten": [{"name": e.name, "from": self.mask(e.old), "to": self.mask(e.new), "why": self.mask(e.why)}
                          for e in plan.rewritten],
            "dropped": [{"name": e.name, "value": self.mask(e.value), "why": self.mask(e.why)}
                        for e in plan.dropped],
        }

    def as_json(self) -> dict[str, Any]:
        """The dry-run report; no secret in it."""
        return {
            "flavour": self.flavour,
            "hostname": self.hostname,
            "mail_root": self.mail_root,
            "postfix": self._service(self.postfix),
            "dovecot": self._service(self.dovecot),
            "maps": [{"name": m.name, "file": str(m.file), "query": self.mask(m.query),
                      "options": {k: self.mask(v) for k, v in m.options.items()}} for m in self.maps],
            "dovecot_sql": None if self.dovecot_sql is None else {
                "file": str(self.dovecot_sql.file),
                "default_pass_scheme": self.dovecot_sql.default_pass_scheme,
                "password_query": self.dovecot_sql.password_query,
                "user_query": self.dovecot_sql.user_query,
                "iterate_query": self.dovecot_sql.iterate_query,
            },
            "database": None if self.database is None else {
                "file": str(self.dump), "tables": self.database.tables, "rows": self.database.rows,
                "rewrites": dict(self.database.rewrites),
            },
            "warnings": [self.mask(w) for w in self.warnings],
        }

    def report_lines(self) -> list[str]:
        """The plan as readable text, one line per entry; no secret in it."""
        lines = [f"flavour: {self.flavour}", f"hostname: {self.hostname or '(the stack default)'}",
                 f"mail root: {self.mail_root or '(none found)'}"]
        for title, plan in (("Postfix", self.postfix), ("Dovecot", self.dovecot)):
            lines.append(f"{title}:")
            lines += [f"  kept       {e.name} = {self.mask(e.value)}" for e in plan.kept]
            lines += [f"  rewritten  {e.name} = {self.mask(e.old)} -> {self.mask(e.new)}  ({self.mask(e.why)})"
                      for e in plan.rewritten]
            lines += [f"  dropped    {e.name} = {self.mask(e.value)}  ({self.mask(e.why)})" for e in plan.dropped]
        lines.append("Maps:")
        lines += [f"  {m.name} ({m.file.name}): {self.mask(m.query)}" for m in self.maps]
        if self.dovecot_sql is not None:
            lines.append(f"Dovecot SQL ({self.dovecot_sql.file.name}): scheme "
                         f"{self.dovecot_sql.default_pass_scheme or '(none)'}")
        if self.database is not None:
            lines.append(f"Database: {self.database.tables} tables, {self.database.rows} rows from {self.dump}")
            lines += [f"  {label}: {count}" for label, count in self.database.rewrites.items()]
        if self.warnings:
            lines.append("Warnings:")
            lines += [f"  ! {self.mask(w)}" for w in self.warnings]
        return lines


def detect_flavour(sources: Sources) -> str:
    if sources.dump_stats is not None and sources.dump_stats.table_names:
        tables = {name.lower() for name in sources.dump_stats.table_names}
        for name, required, _ in FLAVOUR_TABLES:
            if required <= tables:
                return name
    queried: set[str] = set()
    for map_file in sources.maps:
        queried |= maps.tables_in_query(map_file.query)
    if sources.dovecot_sql is not None:
        for query in (sources.dovecot_sql.password_query, sources.dovecot_sql.user_query):
            queried |= maps.tables_in_query(query or "")
    for name, _, required in FLAVOUR_TABLES:
        if required <= queried:
            return name
    return "custom"


def _context(sources: Sources, stack_master: list[postfix.MasterEntry]) -> postfix.Context:
    values = [s.value for s in sources.postfix_main] + [v for e in sources.master for _, v in e.options]
    classes = {
        name for s in sources.postfix_main if s.name == "smtpd_restriction_classes"
        for name in re.split(r"[\s,]+", s.value) if name
    }
    return postfix.Context(
        map_names=frozenset(m.name for m in sources.maps),
        other_files=frozenset(sources.other_files),
        transports=frozenset(e.service for e in [*stack_master, *sources.master]),
        user_parameters=frozenset(postfix.referenced_parameters(values) | classes),
    )


def make_plan(sources: Sources, stack_master_cf: Path | None = None) -> Plan:
    """Pure: the rules over the parsed production files (reads only the stack's own master.cf)."""
    stack_master = postfix.parse_master(stack_master_cf or postfix.stack_master_cf())
    context = _context(sources, stack_master)
    warnings: list[str] = list(sources.warnings)
    main = postfix.apply_rules(((s.name, s.value) for s in sources.postfix_main), context)
    warnings += main.warnings
    commands: list[tuple[str, str]] = [("-e", f"{name}={value}") for name, value in main.applied.items()]
    main_values = {s.name: s.value for s in sources.postfix_main}
    master, master_commands = postfix.plan_master(list(sources.master), stack_master, main_values, context)
    warnings += master.warnings
    commands += master_commands
    postfix_plan = ServicePlan(tuple(main.kept + master.kept), tuple(main.rewritten + master.rewritten),
                               tuple(main.dropped + master.dropped))

    mail_root = None
    userdb_override = None
    if sources.dovecot is not None:
        outcome = dovecot.apply_rules(sources.dovecot.nodes)
        warnings += outcome.warnings
        dovecot_plan = ServicePlan(tuple(outcome.kept), tuple(outcome.rewritten), tuple(outcome.dropped))
        header = [f"# production settings from {sources.dovecot.root.name}, rendered by mailstack; do not edit"]
        dovecot_config = "\n".join(header + outcome.config) + "\n"
        if outcome.mail_location:
            mail_root = dovecot.static_root(outcome.mail_location)
        if mail_root is None and outcome.settings.get("mail_home"):
            mail_root = dovecot.static_root(outcome.settings["mail_home"])
        for fields in outcome.userdb_fields:
            home = re.search(r"\bhome=(\S+)", fields)
            if mail_root is None and home:
                mail_root = dovecot.static_root(home.group(1))
    else:
        dovecot_plan, dovecot_config = ServicePlan(), ""
    if sources.dovecot_sql is not None:
        if mail_root is None:
            mail_root = dovecot.root_from_query(sources.dovecot_sql.user_query)
        if re.search(r"\bAS\s+[ug]id\b", sources.dovecot_sql.user_query or "", re.IGNORECASE):
            userdb_override = "uid=vmail gid=vmail"
            warnings.append("dovecot user_query returns uid/gid: the stack's userdb must override them with "
                            "uid=vmail gid=vmail (its mail belongs to vmail)")

    if mail_root is not None and STACK_MAIL_ROOT.startswith(mail_root.rstrip("/") + "/"):
        warnings.append(f"production's mail root {mail_root} holds the stack's mail volume ({STACK_MAIL_ROOT}): "
                        "it cannot be linked to it, so this copy cannot start (not supported yet)")
    hostname = main_values.get("myhostname")
    referenced_maps = {
        Path(token.split(":")[-1]).name.removesuffix(".cf") for value in main_values.values()
        for token in re.split(r"[\s,]+", value) if token.startswith(("mysql:", "proxy:mysql:"))
    }
    unused = sorted({m.name for m in sources.maps} - referenced_maps) if sources.postfix_main else []
    warnings += [f"map file {name}.cf is not referenced by main.cf: installed, but unused" for name in unused]
    warnings += [f"ignored {path.relative_to(sources.root)}: not recognised as a production file"
                 for path in sources.other_files.values()]
    if sources.dump is not None and sources.dump_stats is not None and not sources.dump_stats.tables:
        warnings.append(f"{sources.dump.name} creates no table: the stack's schema is not created from it")

    return Plan(
        flavour=detect_flavour(sources),
        postfix=postfix_plan,
        postconf_commands=tuple(commands),
        dovecot=dovecot_plan,
        dovecot_config=dovecot_config,
        mail_root=mail_root,
        maps=sources.maps,
        dovecot_sql=sources.dovecot_sql,
        dump=sources.dump,
        database=sources.dump_stats,
        hostname=hostname,
        warnings=tuple(warnings),
        userdb_override_fields=userdb_override,
        secrets=frozenset(maps.secrets_of(sources.maps, sources.dovecot_sql)),
    )


__all__ = ["Kept", "Plan", "Rewritten", "detect_flavour", "make_plan"]
