#!/bin/bash
# Set the generated credentials on every start (init-file, run before clients are served), then exec
# mariadbd in the foreground. The data directory was initialised at image build time.
set -euo pipefail

die() { echo "mailstack-mysql: $*" >&2; exit 1; }
secret() {
  local file=/run/secrets/$1 value
  [[ -r "$file" ]] || die "secret $1 missing (expected $file)"
  value=$(< "$file")
  [[ "$value" =~ ^[A-Za-z0-9_-]{16,128}$ ]] || die "secret $1 must be 16-128 characters of [A-Za-z0-9_-]"
  printf '%s' "$value"
}

if [[ "$1" == mariadbd ]]; then
  db=${MAILSTACK_DB_NAME:-mailstack}
  [[ "$db" =~ ^[a-z_]+$ ]] || die "MAILSTACK_DB_NAME must be lowercase letters and _"
  admin_password=$(secret db_admin_password)
  mail_password=$(secret db_mail_password)

  if [[ ! -d /var/lib/mysql/mysql ]]; then  # e.g. a bind-mounted empty directory
    echo "mailstack-mysql: empty data directory: initialising (slow path)" >&2
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db \
      --auth-root-authentication-method=socket >/dev/null
  fi
  chown -R mysql:mysql /var/lib/mysql /run/mysqld

  init=/run/mysqld/init.sql
  umask 077
  cat > "$init" <<SQL
CREATE DATABASE IF NOT EXISTS \`$db\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'mailstack'@'%' IDENTIFIED BY '$admin_password';
ALTER USER 'mailstack'@'%' IDENTIFIED BY '$admin_password';
GRANT ALL PRIVILEGES ON \`$db\`.* TO 'mailstack'@'%';
CREATE USER IF NOT EXISTS 'mailreader'@'%' IDENTIFIED BY '$mail_password';
ALTER USER 'mailreader'@'%' IDENTIFIED BY '$mail_password';
GRANT SELECT ON \`$db\`.* TO 'mailreader'@'%';
-- Not the mail schema: an id of this server's run, new at every start (a MEMORY table is empty after a
-- restart), which Postfix's MariaDB watcher compares to tell a restart it did not see from a server that
-- kept running (start time and uptime are whole seconds: a restart within a second of the start hides).
CREATE DATABASE IF NOT EXISTS server_state;
CREATE TABLE IF NOT EXISTS server_state.boot (id CHAR(36) NOT NULL) ENGINE=MEMORY;
DELETE FROM server_state.boot;
INSERT INTO server_state.boot VALUES (UUID());
GRANT SELECT ON server_state.boot TO 'mailreader'@'%';
SQL
  # The mail schema's tables (rendered by the orchestrator from its schema definition; idempotent DDL).
  if [[ -r /run/mailstack/mysql/schema.sql ]]; then
    { printf 'USE `%s`;\n' "$db"; cat /run/mailstack/mysql/schema.sql; } >> "$init"
  fi
  chown mysql:mysql "$init"
  printf '[client]\nuser=mailreader\npassword=%s\nhost=127.0.0.1\nprotocol=tcp\n' "$mail_password" \
    > /run/mysqld/health.cnf
  printf '%s' "$db" > /run/mysqld/health.db
  exec mariadbd --init-file="$init"
fi
exec "$@"
