"""The virtual flavour: the ISPmail tutorial's schema (workaround.org, bookworm), which the Linode and
DigitalOcean guides share: virtual_domains, virtual_users (with quota), virtual_aliases.

Column widths are the tutorial's: domain names up to 50 characters, addresses up to 100, password hashes up
to 150 (the orchestrator's {ARGON2ID}... hashes are about 107 characters, {BLF-CRYPT} 71, {SHA512-CRYPT} 120).
The tutorial creates its tables with the server's default character set; mailstack says utf8mb4.

Alias domains are not in the tutorial; they come in its spirit, as a migration (a table created if missing,
so an existing stack gains it in place): virtual_alias_domains (alias domain -> target domain, both rows of
virtual_domains, removed with either). virtual_alias_maps, in Postfix's lookup order (user@domain in every
map first, then @domain; results looked up again until an address maps to itself):

1. mysql-virtual-alias-maps: the tutorial's aliases, catch-alls (source @domain) included;
2. mysql-email2email: a real user maps to itself, so a catch-all never swallows its mail;
3. mysql-virtual-alias-domain-maps: user@ALIAS -> user@TARGET when that is a user or an alias (the
   email2email idea for the alias domain: maps 1-2 then resolve it as in the target);
4. mysql-virtual-alias-domain-catchall-maps: the key @ALIAS only: the target's catch-all destinations, none
   when the target has none (an unknown user stays 550 at RCPT).
"""

from __future__ import annotations

from mailstack.schema.base import Flavour, Limits

_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"

VIRTUAL = Flavour(
    name="virtual",
    ddl=(
        f"""CREATE TABLE IF NOT EXISTS `virtual_domains` (
              `id` int(11) NOT NULL auto_increment,
              `name` varchar(50) NOT NULL,
              PRIMARY KEY (`id`),
              UNIQUE KEY `name` (`name`)
            ) {_TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS `virtual_users` (
              `id` int(11) NOT NULL auto_increment,
              `domain_id` int(11) NOT NULL,
              `email` varchar(100) NOT NULL,
              `password` varchar(150) NOT NULL,
              `quota` bigint(11) NOT NULL DEFAULT 0,
              PRIMARY KEY (`id`),
              UNIQUE KEY `email` (`email`),
              FOREIGN KEY (domain_id) REFERENCES virtual_domains(id) ON DELETE CASCADE
            ) {_TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS `virtual_aliases` (
              `id` int(11) NOT NULL auto_increment,
              `domain_id` int(11) NOT NULL,
              `source` varchar(100) NOT NULL,
              `destination` varchar(100) NOT NULL,
              PRIMARY KEY (`id`),
              FOREIGN KEY (domain_id) REFERENCES virtual_domains(id) ON DELETE CASCADE
            ) {_TABLE_OPTIONS}""",
    ),
    migrations=(
        f"""CREATE TABLE IF NOT EXISTS `virtual_alias_domains` (
              `id` int(11) NOT NULL auto_increment,
              `alias_domain_id` int(11) NOT NULL,
              `target_domain_id` int(11) NOT NULL,
              PRIMARY KEY (`id`),
              UNIQUE KEY `alias_domain_id` (`alias_domain_id`),
              FOREIGN KEY (alias_domain_id) REFERENCES virtual_domains(id) ON DELETE CASCADE,
              FOREIGN KEY (target_domain_id) REFERENCES virtual_domains(id) ON DELETE CASCADE
            ) {_TABLE_OPTIONS}""",
    ),
    postfix_maps={
        "mysql-virtual-mailbox-domains": "SELECT 1 FROM virtual_domains WHERE name='%s'",
        "mysql-virtual-mailbox-maps": "SELECT 1 FROM virtual_users WHERE email='%s'",
        "mysql-virtual-alias-maps": "SELECT destination FROM virtual_aliases WHERE source='%s'",
        # A user's address maps to itself, so that a catch-all (@domain) never swallows a real user's mail.
        "mysql-email2email": "SELECT email FROM virtual_users WHERE email='%s'",
        # Not in the tutorial either: the mailboxes with a limit, asked about at RCPT (quota-status, main.cf).
        "mysql-quota-limited-recipients": "SELECT 'quota_status_check' FROM virtual_users WHERE email='%u@%d' "
                                          "AND quota > 0",
        "mysql-virtual-alias-domain-maps":
            "SELECT CONCAT('%u', '@', t.name) FROM virtual_alias_domains ad JOIN virtual_domains a "
            "ON a.id = ad.alias_domain_id JOIN virtual_domains t ON t.id = ad.target_domain_id "
            "WHERE a.name='%d' AND (EXISTS (SELECT 1 FROM "
            "virtual_users WHERE email=CONCAT('%u', '@', t.name)) OR EXISTS (SELECT 1 FROM virtual_aliases "
            "WHERE source=CONCAT('%u', '@', t.name)))",
        "mysql-virtual-alias-domain-catchall-maps":
            "SELECT c.destination FROM virtual_alias_domains ad JOIN virtual_domains a ON a.id = ad.alias_domain_id "
            "JOIN virtual_domains t ON t.id = ad.target_domain_id "
            "JOIN virtual_aliases c ON c.source=CONCAT('@', t.name) "
            "WHERE a.name='%d' AND '%s'=CONCAT('@', a.name)",
        # Not in the tutorial (it does not check senders); the same rule as the default flavour: a user may
        # send as itself and as the aliases that lead to it.
        "mysql-sender-login-maps": "SELECT email FROM virtual_users WHERE email='%s' "
                                   "UNION SELECT destination FROM virtual_aliases WHERE source='%s'",
    },
    postfix_parameters={
        "virtual_mailbox_domains": ("mysql-virtual-mailbox-domains",),
        "virtual_mailbox_maps": ("mysql-virtual-mailbox-maps",),
        "virtual_alias_maps": ("mysql-virtual-alias-maps", "mysql-email2email", "mysql-virtual-alias-domain-maps",
                               "mysql-virtual-alias-domain-catchall-maps"),
        "smtpd_sender_login_maps": ("mysql-sender-login-maps",),
        "quota_limited_recipients": ("mysql-quota-limited-recipients",),
    },
    password_query="SELECT email AS user, password FROM virtual_users WHERE email='%u'",
    user_query="SELECT email AS user, CONCAT('*:bytes=', quota) AS quota_rule, '/var/mail/vmail/%d/%n' AS home, "
               "5000 AS uid, 5000 AS gid FROM virtual_users WHERE email='%u'",
    iterate_query="SELECT email AS user FROM virtual_users",
    sql={
        "list_domains": "SELECT name FROM virtual_domains ORDER BY name",
        "domain_usage": "SELECT d.name, (SELECT COUNT(*) FROM virtual_users u WHERE u.domain_id = d.id), "
                        "(SELECT COUNT(*) FROM virtual_aliases a WHERE a.domain_id = d.id) "
                        "FROM virtual_domains d ORDER BY d.name",
        "add_domain": "INSERT IGNORE INTO virtual_domains (name) VALUES (%(domain)s)",
        "remove_domain": "DELETE FROM virtual_domains WHERE name = %(domain)s",
        "list_users": "SELECT email, password, quota FROM virtual_users ORDER BY email",
        "user_password": "SELECT password FROM virtual_users WHERE email = %(address)s",
        "add_user": "INSERT INTO virtual_users (domain_id, email, password, quota) "
                    "SELECT id, %(address)s, %(password)s, %(quota)s FROM virtual_domains WHERE name = %(domain)s",
        "set_password": "UPDATE virtual_users SET password = %(password)s WHERE email = %(address)s",
        "set_quota": "UPDATE virtual_users SET quota = %(quota)s WHERE email = %(address)s",
        "remove_user": "DELETE FROM virtual_users WHERE email = %(address)s",
        "list_aliases": "SELECT source, destination FROM virtual_aliases ORDER BY source, destination",
        # The tutorial's table has no unique key on (source, destination): skip a row that exists.
        "add_alias": "INSERT INTO virtual_aliases (domain_id, source, destination) "
                     "SELECT id, %(source)s, %(destination)s FROM virtual_domains WHERE name = %(domain)s "
                     "AND NOT EXISTS (SELECT 1 FROM virtual_aliases WHERE source = %(source)s "
                     "AND destination = %(destination)s)",
        "remove_alias": "DELETE FROM virtual_aliases WHERE source = %(source)s",
        "remove_alias_destination": "DELETE FROM virtual_aliases WHERE source = %(source)s "
                                    "AND destination = %(destination)s",
        "list_alias_domains": "SELECT a.name, t.name FROM virtual_alias_domains ad JOIN virtual_domains a "
                              "ON a.id = ad.alias_domain_id JOIN virtual_domains t ON t.id = ad.target_domain_id "
                              "ORDER BY a.name",
        "add_alias_domain": "INSERT IGNORE INTO virtual_alias_domains (alias_domain_id, target_domain_id) "
                            "SELECT a.id, t.id FROM virtual_domains a JOIN virtual_domains t ON t.name = %(target)s "
                            "WHERE a.name = %(alias)s",
        "remove_alias_domain": "DELETE ad FROM virtual_alias_domains ad JOIN virtual_domains a "
                               "ON a.id = ad.alias_domain_id WHERE a.name = %(alias)s",
    },
    default_pass_scheme="SHA512-CRYPT",
    features=frozenset({"quota", "alias_domains"}),
    limits=Limits(domain=50, address=100, password=150),
)
