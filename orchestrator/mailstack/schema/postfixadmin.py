"""The postfixadmin flavour: PostfixAdmin's tables as its public/upgrade.php leaves them on MySQL/MariaDB
(latin1, datetime created/modified, tinyint active), and the queries of its DOCUMENTS/POSTFIX_CONF.txt and
DOVECOT.txt.

PostfixAdmin's conventions, which the orchestrator's writes follow: every mailbox has an alias row to itself
(so a catch-all never swallows its mail); a catch-all is the alias row `@domain`; `alias.goto` is a
comma-separated list (one row per address); `mailbox.quota` is in bytes; `mailbox.maildir` is
`domain/local_part/`, below /var/mail/vmail (the stack's mail volume). The tables have no foreign keys on
MySQL: removing a domain removes its rows from each table.
"""

from __future__ import annotations

from collections.abc import Iterable

from mailstack.errors import MailstackError
from mailstack.schema.base import Flavour, Limits, Store, UserRow, domain_of

_COLLATE = "CHARACTER SET latin1 COLLATE latin1_general_ci"  # upgrade.php's {COLLATE}
_UTF8 = "/*!40100 CHARACTER SET utf8mb4 */"  # upgrade.php's {UTF-8}
_DATETIME = "datetime NOT NULL default '2000-01-01 00:00:00'"  # upgrade.php's {DATETIME}

_ACTIVE_MAILBOX = "SELECT 1 FROM mailbox WHERE username = %(address)s"


class PostfixAdminStore(Store):
    """PostfixAdmin's rows: mailbox + its self-alias, goto lists merged in one alias row per address."""

    def domain_usage(self) -> dict[str, tuple[int, int]]:
        self._run("domain_usage")
        return {row[0]: (int(row[1]), int(row[2])) for row in self.cursor.fetchall()}

    def user_rows(self) -> list[UserRow]:
        self._run("list_users")
        return [UserRow(row[0], row[1], int(row[2]), bool(int(row[3]))) for row in self.cursor.fetchall()]

    def _alias_rows(self) -> dict[str, list[str]]:
        self._run("list_aliases")
        return {address: _split(goto) for address, goto in self.cursor.fetchall()}

    def aliases(self) -> dict[str, list[str]]:
        """Every alias and its destinations, a mailbox's own address left out of its self-alias row."""
        mailboxes = set(self.users())
        result = {}
        for address, goto in self._alias_rows().items():
            destinations = [d for d in goto if not (address in mailboxes and d == address)]
            if destinations:
                result[address] = destinations
        return result

    def remove_domain(self, name: str) -> bool:
        for statement in ("remove_domain_mailboxes", "remove_domain_aliases", "remove_domain_alias_domains"):
            self._run(statement, domain=name)
        return self._run("remove_domain", domain=name) > 0

    def add_user(self, address: str, password_hash: str, quota: int | None = None, active: bool = True) -> bool:
        local_part, domain = address.rsplit("@", 1)
        added = self._run("add_user", address=address, password=password_hash, domain=domain,
                          local_part=local_part, maildir=f"{domain}/{local_part}/", quota=quota or 0,
                          active=1 if active else 0) > 0
        if added:
            existing = self._alias_rows().get(address)
            if existing is None:
                self._run("insert_alias", address=address, goto=address, domain=domain, active=1 if active else 0)
            elif address not in existing:
                self._set_goto(address, [address, *existing])
        return added

    def set_active(self, address: str, active: bool) -> bool:
        """The mailbox and its self-alias together, as PostfixAdmin's mailbox edit does."""
        changed = self._run("set_active", address=address, active=1 if active else 0) > 0
        if changed or self.password_hash(address) is not None:
            self._run("set_alias_active", address=address, active=1 if active else 0)
            return True
        return False

    def remove_user(self, address: str) -> bool:
        removed = self._run("remove_user", address=address) > 0
        if removed:
            goto = [d for d in self._alias_rows().get(address, []) if d != address]
            if goto:
                self._set_goto(address, goto)
            else:
                self._run("remove_alias", source=address)
        return removed

    def add_alias(self, source: str, destinations: Iterable[str]) -> int:
        if domain_of(source) not in self.domains():
            return 0
        existing = self._alias_rows().get(source)
        wanted = list(dict.fromkeys(destinations))
        if existing is None:
            self._run("insert_alias", address=source, goto=",".join(wanted), domain=domain_of(source), active=1)
            return len(wanted)
        new = [d for d in wanted if d not in existing]
        if new:
            self._set_goto(source, [*existing, *new])
        return len(new)

    def remove_alias(self, source: str, destination: str | None = None) -> int:
        existing = self._alias_rows().get(source)
        if existing is None:
            return 0
        is_mailbox = self.password_hash(source) is not None
        removable = [d for d in existing if d != source or not is_mailbox]  # a mailbox keeps its self-alias
        gone = [d for d in removable if destination in (None, d)]
        if not gone:
            return 0
        kept = [d for d in existing if d not in gone]
        if kept:
            self._set_goto(source, kept)
        else:
            self._run("remove_alias", source=source)
        return len(gone)

    def set_alias_active(self, source: str, active: bool) -> bool:
        return self._run("set_alias_active", address=source, active=1 if active else 0) > 0

    def add_alias_domain(self, alias: str, target: str) -> bool:
        return self._run("add_alias_domain", alias=alias, target=target) > 0

    def _set_goto(self, address: str, goto: list[str]) -> None:
        if len(",".join(goto)) > 65535:
            raise MailstackError(f"alias {address} would have too many destinations (alias.goto is a TEXT column)")
        self._run("set_goto", address=address, goto=",".join(goto))


def _split(goto: str) -> list[str]:
    return [part.strip() for part in goto.split(",") if part.strip()]


POSTFIXADMIN = Flavour(
    name="postfixadmin",
    ddl=(
        f"""CREATE TABLE IF NOT EXISTS `domain` (
              `domain` varchar(255) NOT NULL,
              `description` varchar(255) {_UTF8} NOT NULL default '',
              `aliases` int(10) NOT NULL default '0',
              `mailboxes` int(10) NOT NULL default '0',
              `maxquota` bigint(20) NOT NULL default '0',
              `quota` bigint(20) NOT NULL default '0',
              `transport` varchar(255) default NULL,
              `backupmx` tinyint(1) NOT NULL default '0',
              `created` {_DATETIME},
              `modified` {_DATETIME},
              `active` tinyint(1) NOT NULL default '1',
              `password_expiry` int DEFAULT 0,
              PRIMARY KEY (`domain`),
              KEY domain (`domain`)
            ) {_COLLATE} COMMENT='Postfix Admin - Virtual Domains'""",
        f"""CREATE TABLE IF NOT EXISTS `mailbox` (
              `username` varchar(255) NOT NULL,
              `password` varchar(255) NOT NULL default '',
              `name` varchar(255) {_UTF8} NOT NULL default '',
              `maildir` varchar(255) NOT NULL default '',
              `quota` bigint(20) NOT NULL default '0',
              `local_part` varchar(255) NOT NULL,
              `domain` varchar(255) NOT NULL,
              `created` {_DATETIME},
              `modified` {_DATETIME},
              `active` tinyint(1) NOT NULL default '1',
              `phone` varchar(30) {_UTF8} NOT NULL DEFAULT '',
              `email_other` varchar(255) {_UTF8} NOT NULL DEFAULT '',
              `token` varchar(255) {_UTF8} NOT NULL DEFAULT '',
              `token_validity` {_DATETIME},
              `password_expiry` {_DATETIME},
              `totp_secret` varchar(255) {_UTF8} DEFAULT NULL,
              `smtp_active` tinyint(1) NOT NULL DEFAULT '1',
              PRIMARY KEY (`username`),
              KEY username (`username`),
              KEY domain (`domain`)
            ) {_COLLATE} COMMENT='Postfix Admin - Virtual Mailboxes'""",
        f"""CREATE TABLE IF NOT EXISTS `alias` (
              `address` varchar(255) NOT NULL,
              `goto` text NOT NULL,
              `domain` varchar(255) NOT NULL,
              `description` varchar(255) {_UTF8} NOT NULL DEFAULT '',
              `created` {_DATETIME},
              `modified` {_DATETIME},
              `active` tinyint(1) NOT NULL default '1',
              PRIMARY KEY (`address`),
              KEY address (`address`),
              KEY domain (`domain`)
            ) {_COLLATE} COMMENT='Postfix Admin - Virtual Aliases'""",
        f"""CREATE TABLE IF NOT EXISTS `alias_domain` (
              `alias_domain` varchar(255) NOT NULL default '',
              `target_domain` varchar(255) NOT NULL default '',
              `description` varchar(255) {_UTF8} NOT NULL DEFAULT '',
              `created` {_DATETIME},
              `modified` {_DATETIME},
              `active` tinyint(1) NOT NULL default '1',
              PRIMARY KEY (`alias_domain`),
              KEY `active` (`active`),
              KEY `target_domain` (`target_domain`)
            ) {_COLLATE} COMMENT='Postfix Admin - Domain Aliases'""",
        """CREATE TABLE IF NOT EXISTS `quota2` (
              `username` VARCHAR(100) CHARACTER SET latin1 COLLATE latin1_general_ci NOT NULL,
              `bytes` bigint NOT NULL DEFAULT 0,
              `messages` integer NOT NULL DEFAULT 0,
              PRIMARY KEY (`username`)
            )""",
    ),
    postfix_maps={
        "mysql_virtual_domains_maps": "SELECT domain FROM domain WHERE domain='%s' AND active = '1'",
        "mysql_virtual_alias_maps": "SELECT goto FROM alias WHERE address='%s' AND active = '1'",
        "mysql_virtual_alias_domain_maps":
            "SELECT goto FROM alias,alias_domain WHERE alias_domain.alias_domain = '%d' and alias.address = "
            "CONCAT('%u', '@', alias_domain.target_domain) AND alias.active='1' AND alias_domain.active='1'",
        "mysql_virtual_alias_domain_catchall_maps":
            "SELECT goto FROM alias,alias_domain WHERE alias_domain.alias_domain = '%d' and alias.address = "
            "CONCAT('@', alias_domain.target_domain) AND alias.active='1' AND alias_domain.active='1'",
        "mysql_virtual_mailbox_maps": "SELECT maildir FROM mailbox WHERE username='%s' AND active = '1'",
        "mysql_virtual_alias_domain_mailbox_maps":
            "SELECT maildir FROM mailbox,alias_domain WHERE alias_domain.alias_domain = '%d' and mailbox.username = "
            "CONCAT('%u', '@', alias_domain.target_domain) AND mailbox.active='1' AND alias_domain.active='1'",
        # POSTFIX_CONF.txt's smtpd_sender_login_maps: a mailbox may send as itself...
        "mysql_mailbox_maps": "SELECT username FROM mailbox WHERE username = '%s' AND active = '1'",
        # ... and, as in the default flavour, the destinations of an active alias may send as the alias (the
        # goto list is a list of owners: Postfix splits it at commas).
        "mysql_sender_alias_maps": "SELECT goto FROM alias WHERE address='%s' AND active = '1'",
        # Not in PostfixAdmin's files: the mailboxes with a limit, asked about at RCPT (quota-status, main.cf).
        "mysql_quota_limited_recipients": "SELECT 'quota_status_check' FROM mailbox WHERE username='%u@%d' "
                                          "AND active = '1' AND quota > 0",
    },
    postfix_parameters={
        "virtual_mailbox_domains": ("mysql_virtual_domains_maps",),
        "virtual_alias_maps": ("mysql_virtual_alias_maps", "mysql_virtual_alias_domain_maps",
                               "mysql_virtual_alias_domain_catchall_maps"),
        "virtual_mailbox_maps": ("mysql_virtual_mailbox_maps", "mysql_virtual_alias_domain_mailbox_maps"),
        "smtpd_sender_login_maps": ("mysql_mailbox_maps", "mysql_sender_alias_maps"),
        "quota_limited_recipients": ("mysql_quota_limited_recipients",),
    },
    password_query="SELECT username AS user,password FROM mailbox WHERE username = '%u' AND active='1'",
    # DOVECOT.txt's query with the stack's mail root and vmail's uid; the maildir column is the Maildir
    # itself (as PostfixAdmin's Postfix-side delivery has it), so it is also the `mail` location.
    user_query="SELECT CONCAT('/var/mail/vmail/', maildir) AS home, CONCAT('maildir:/var/mail/vmail/', maildir) "
               "AS mail, 5000 AS uid, 5000 AS gid, CONCAT('*:bytes=', quota) AS quota_rule FROM mailbox "
               "WHERE username = '%u' AND active='1'",
    iterate_query="SELECT username as user FROM mailbox WHERE active = '1'",
    sql={
        "list_domains": "SELECT domain FROM domain ORDER BY domain",
        "domain_usage": "SELECT d.domain, (SELECT COUNT(*) FROM mailbox m WHERE m.domain = d.domain), "
                        "(SELECT COUNT(*) FROM alias a WHERE a.domain = d.domain AND NOT EXISTS "
                        "(SELECT 1 FROM mailbox m WHERE m.username = a.address AND a.goto = a.address)) "
                        "FROM domain d ORDER BY d.domain",
        "add_domain": "INSERT IGNORE INTO domain (domain, description, transport, created, modified, active) "
                      "VALUES (%(domain)s, '', 'virtual', NOW(), NOW(), 1)",
        "remove_domain": "DELETE FROM domain WHERE domain = %(domain)s",
        "remove_domain_mailboxes": "DELETE FROM mailbox WHERE domain = %(domain)s",
        "remove_domain_aliases": "DELETE FROM alias WHERE domain = %(domain)s",
        "remove_domain_alias_domains": "DELETE FROM alias_domain WHERE alias_domain = %(domain)s "
                                       "OR target_domain = %(domain)s",
        "list_users": "SELECT username, password, quota, active FROM mailbox ORDER BY username",
        "user_password": "SELECT password FROM mailbox WHERE username = %(address)s",
        "add_user": "INSERT INTO mailbox (username, password, name, maildir, quota, local_part, domain, created, "
                    "modified, active) SELECT %(address)s, %(password)s, '', %(maildir)s, %(quota)s, %(local_part)s, "
                    "domain, NOW(), NOW(), %(active)s FROM domain WHERE domain = %(domain)s",
        "set_password": "UPDATE mailbox SET password = %(password)s, modified = NOW() WHERE username = %(address)s",
        "set_quota": "UPDATE mailbox SET quota = %(quota)s, modified = NOW() WHERE username = %(address)s",
        "set_active": "UPDATE mailbox SET active = %(active)s, modified = NOW() WHERE username = %(address)s",
        "remove_user": "DELETE FROM mailbox WHERE username = %(address)s",
        "list_aliases": "SELECT address, goto FROM alias ORDER BY address",
        "insert_alias": "INSERT INTO alias (address, goto, domain, created, modified, active) "
                        "VALUES (%(address)s, %(goto)s, %(domain)s, NOW(), NOW(), %(active)s)",
        "set_goto": "UPDATE alias SET goto = %(goto)s, modified = NOW() WHERE address = %(address)s",
        "set_alias_active": "UPDATE alias SET active = %(active)s, modified = NOW() WHERE address = %(address)s",
        "remove_alias": "DELETE FROM alias WHERE address = %(source)s",
        "list_alias_domains": "SELECT alias_domain, target_domain FROM alias_domain ORDER BY alias_domain",
        "add_alias_domain": "INSERT IGNORE INTO alias_domain (alias_domain, target_domain, created, modified, "
                            "active) VALUES (%(alias)s, %(target)s, NOW(), NOW(), 1)",
        "remove_alias_domain": "DELETE FROM alias_domain WHERE alias_domain = %(alias)s",
    },
    default_pass_scheme="MD5-CRYPT",  # DOVECOT.txt's (PostfixAdmin's md5crypt); prefixed hashes win anyway
    features=frozenset({"quota", "active", "alias_domains"}),
    limits=Limits(domain=255, address=255, password=255),
    store_class=PostfixAdminStore,
)
