"""The default flavour: mailstack's own schema (domains, users, aliases), unchanged for existing stacks."""

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
    postfix_maps={
        "virtual_domains": "SELECT 1 FROM domains WHERE name = '%s'",
        "virtual_mailboxes": "SELECT 1 FROM users WHERE email = '%s'",
        "virtual_aliases": "SELECT destination FROM aliases WHERE source = '%s'",
        "sender_logins": "SELECT email FROM users WHERE email = '%s' "
                         "UNION SELECT destination FROM aliases WHERE source = '%s'",
    },
    # What images/postfix/main.cf says already: rendering it changes nothing.
    postfix_parameters={
        "virtual_mailbox_domains": ("virtual_domains",),
        "virtual_mailbox_maps": ("virtual_mailboxes",),
        "virtual_alias_maps": ("virtual_aliases",),
        "smtpd_sender_login_maps": ("sender_logins",),
    },
    password_query="SELECT email AS user, password FROM users WHERE email = '%u'",
    user_query="SELECT email AS user FROM users WHERE email = '%u'",
    iterate_query="SELECT email AS user FROM users",
    sql={
        "list_domains": "SELECT name FROM domains ORDER BY name",
        "domain_usage": "SELECT d.name, (SELECT COUNT(*) FROM users u WHERE u.domain_id = d.id), "
                        "(SELECT COUNT(*) FROM aliases a WHERE a.domain_id = d.id) FROM domains d ORDER BY d.name",
        "add_domain": "INSERT IGNORE INTO domains (name) VALUES (%(domain)s)",
        "remove_domain": "DELETE FROM domains WHERE name = %(domain)s",
        "list_users": "SELECT email, password FROM users ORDER BY email",
        "user_password": "SELECT password FROM users WHERE email = %(address)s",
        "add_user": "INSERT INTO users (domain_id, email, password) "
                    "SELECT id, %(address)s, %(password)s FROM domains WHERE name = %(domain)s",
        "set_password": "UPDATE users SET password = %(password)s WHERE email = %(address)s",
        "remove_user": "DELETE FROM users WHERE email = %(address)s",
        "list_aliases": "SELECT source, destination FROM aliases ORDER BY source, destination",
        "add_alias": "INSERT IGNORE INTO aliases (domain_id, source, destination) "
                     "SELECT id, %(source)s, %(destination)s FROM domains WHERE name = %(domain)s",
        "remove_alias": "DELETE FROM aliases WHERE source = %(source)s",
        "remove_alias_destination": "DELETE FROM aliases WHERE source = %(source)s AND destination = %(destination)s",
    },
)
