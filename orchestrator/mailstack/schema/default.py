"""The default flavour: mailstack's own schema (domains, users, aliases, alias_domains).

What later releases added comes as migrations (idempotent, run at each `up` and each MariaDB start), so
that a stack made by an earlier release keeps its tables and rows and gains the new column and table in
place: users.quota (bytes; NULL or 0: unlimited) and the alias_domains table.

How Postfix resolves a recipient here (virtual(5)): virtual_alias_maps is asked for user@domain in every map
of the list, in order, and only when none answers for @domain (a catch-all); the result is looked up again
(recursively) until an address maps to itself. So:

1. virtual_aliases: the aliases, catch-alls (source @domain) included;
2. virtual_mailbox_self: a real mailbox maps to itself (ISPmail's email2email): its own address answers
   before any @domain is asked, so a catch-all never takes a real user's mail;
3. alias_domain_addresses: user@ALIAS becomes user@TARGET when that is a mailbox or an alias, and maps 1-2
   then resolve it as they do in the target (a real mailbox wins in the alias domain too);
4. alias_domain_catch_all: for the key @ALIAS only (after every map missed the full address): the target's
   catch-all destinations, and nothing when the target has none (the unknown user stays 550 at RCPT).

An alias domain is also a row of `domains`, so it is in virtual_mailbox_domains (never also in
virtual_alias_domains: Postfix wants a domain in one address class only).
"""

from __future__ import annotations

from mailstack.schema.base import PASSWORD_HASH_MAX, Flavour

_TABLE_OPTIONS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci"

DEFAULT = Flavour(
    name="default",
    ddl=(
        f"""CREATE TABLE IF NOT EXISTS domains (
              id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
              name VARCHAR(253) NOT NULL,
              UNIQUE KEY name (name)
            ) {_TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS users (
              id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
              domain_id INT UNSIGNED NOT NULL,
              email VARCHAR(254) NOT NULL,
              password VARCHAR({PASSWORD_HASH_MAX}) NOT NULL,
              UNIQUE KEY email (email),
              CONSTRAINT users_domain FOREIGN KEY (domain_id) REFERENCES domains (id) ON DELETE CASCADE
            ) {_TABLE_OPTIONS}""",
        f"""CREATE TABLE IF NOT EXISTS aliases (
              id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
              domain_id INT UNSIGNED NOT NULL,
              source VARCHAR(254) NOT NULL,
              destination VARCHAR(254) NOT NULL,
              UNIQUE KEY source_destination (source, destination),
              CONSTRAINT aliases_domain FOREIGN KEY (domain_id) REFERENCES domains (id) ON DELETE CASCADE
            ) {_TABLE_OPTIONS}""",
    ),
    migrations=(
        "ALTER TABLE users ADD COLUMN IF NOT EXISTS quota BIGINT UNSIGNED NULL DEFAULT NULL",
        f"""CREATE TABLE IF NOT EXISTS alias_domains (
              id INT UNSIGNED AUTO_INCREMENT PRIMARY KEY,
              alias_domain_id INT UNSIGNED NOT NULL,
              target_domain_id INT UNSIGNED NOT NULL,
              UNIQUE KEY alias_domain (alias_domain_id),
              CONSTRAINT alias_domains_alias FOREIGN KEY (alias_domain_id) REFERENCES domains (id) ON DELETE CASCADE,
              CONSTRAINT alias_domains_target FOREIGN KEY (target_domain_id) REFERENCES domains (id)
                ON DELETE CASCADE
            ) {_TABLE_OPTIONS}""",
    ),
    postfix_maps={
        "virtual_domains": "SELECT 1 FROM domains WHERE name = '%s'",
        "virtual_mailboxes": "SELECT 1 FROM users WHERE email = '%s'",
        "virtual_aliases": "SELECT destination FROM aliases WHERE source = '%s'",
        # '%u@%d' instead of '%s': Postfix suppresses the query for keys without a local part or a domain, so
        # the lookups of an address's domain, parent domains, "user@" (access maps) and "@domain" (alias
        # maps), which can never match a mailbox, cost no SQL query
        "virtual_mailbox_self": "SELECT email FROM users WHERE email = '%u@%d'",
        # the mailboxes with a limit, for which Postfix asks Dovecot's quota-status at RCPT (main.cf)
        "quota_limited_recipients": "SELECT 'quota_status_check' FROM users WHERE email = '%u@%d' AND quota > 0",
        "alias_domain_addresses": "SELECT CONCAT('%u', '@', t.name) FROM alias_domains ad "
                                  "JOIN domains a ON a.id = ad.alias_domain_id "
                                  "JOIN domains t ON t.id = ad.target_domain_id WHERE a.name = '%d' "
                                  "AND (EXISTS (SELECT 1 FROM users WHERE email = CONCAT('%u', '@', t.name)) "
                                  "OR EXISTS (SELECT 1 FROM aliases WHERE source = CONCAT('%u', '@', t.name)))",
        "alias_domain_catch_all": "SELECT c.destination FROM alias_domains ad "
                                  "JOIN domains a ON a.id = ad.alias_domain_id "
                                  "JOIN domains t ON t.id = ad.target_domain_id "
                                  "JOIN aliases c ON c.source = CONCAT('@', t.name) "
                                  "WHERE a.name = '%d' AND '%s' = CONCAT('@', a.name)",
        "sender_logins": "SELECT email FROM users WHERE email = '%s' "
                         "UNION SELECT destination FROM aliases WHERE source = '%s'",
    },
    # What images/postfix/main.cf says already: rendering it changes nothing.
    postfix_parameters={
        "virtual_mailbox_domains": ("virtual_domains",),
        "virtual_mailbox_maps": ("virtual_mailboxes",),
        "virtual_alias_maps": ("virtual_aliases", "virtual_mailbox_self", "alias_domain_addresses",
                               "alias_domain_catch_all"),
        "smtpd_sender_login_maps": ("sender_logins",),
        "quota_limited_recipients": ("quota_limited_recipients",),
    },
    password_query="SELECT email AS user, password FROM users WHERE email = '%u'",
    # NULL (and 0) quota: an explicit *:bytes=0 (unlimited). A NULL quota_rule would be left out by Dovecot's SQL
    # userdb, and then the maildir backend falls back to the limit in the user's maildirsize file: a quota
    # once set and then removed would still apply.
    user_query="SELECT email AS user, CONCAT('*:bytes=', IFNULL(quota, 0)) AS quota_rule FROM users "
               "WHERE email = '%u'",
    iterate_query="SELECT email AS user FROM users",
    sql={
        "list_domains": "SELECT name FROM domains ORDER BY name",
        "domain_usage": "SELECT d.name, (SELECT COUNT(*) FROM users u WHERE u.domain_id = d.id), "
                        "(SELECT COUNT(*) FROM aliases a WHERE a.domain_id = d.id) FROM domains d ORDER BY d.name",
        "add_domain": "INSERT IGNORE INTO domains (name) VALUES (%(domain)s)",
        "remove_domain": "DELETE FROM domains WHERE name = %(domain)s",
        "list_users": "SELECT email, password, quota FROM users ORDER BY email",
        "user_password": "SELECT password FROM users WHERE email = %(address)s",
        "add_user": "INSERT INTO users (domain_id, email, password, quota) "
                    "SELECT id, %(address)s, %(password)s, NULLIF(%(quota)s, 0) FROM domains WHERE name = %(domain)s",
        "set_password": "UPDATE users SET password = %(password)s WHERE email = %(address)s",
        "set_quota": "UPDATE users SET quota = NULLIF(%(quota)s, 0) WHERE email = %(address)s",
        "remove_user": "DELETE FROM users WHERE email = %(address)s",
        "list_aliases": "SELECT source, destination FROM aliases ORDER BY source, destination",
        "add_alias": "INSERT IGNORE INTO aliases (domain_id, source, destination) "
                     "SELECT id, %(source)s, %(destination)s FROM domains WHERE name = %(domain)s",
        "remove_alias": "DELETE FROM aliases WHERE source = %(source)s",
        "remove_alias_destination": "DELETE FROM aliases WHERE source = %(source)s AND destination = %(destination)s",
        "list_alias_domains": "SELECT a.name, t.name FROM alias_domains ad JOIN domains a ON a.id = ad.alias_domain_id "
                              "JOIN domains t ON t.id = ad.target_domain_id ORDER BY a.name",
        "add_alias_domain": "INSERT IGNORE INTO alias_domains (alias_domain_id, target_domain_id) "
                            "SELECT a.id, t.id FROM domains a JOIN domains t ON t.name = %(target)s "
                            "WHERE a.name = %(alias)s",
        "remove_alias_domain": "DELETE ad FROM alias_domains ad JOIN domains a ON a.id = ad.alias_domain_id "
                               "WHERE a.name = %(alias)s",
    },
    features=frozenset({"quota", "alias_domains"}),
)
