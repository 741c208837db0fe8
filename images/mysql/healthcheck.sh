#!/bin/bash
# Healthy when MariaDB answers over TCP with the mail reader's credentials and the mail database exists
# with its tables (the init file creates them before clients are served).
set -euo pipefail
db=$(< /run/mysqld/health.db)
tables=$(mariadb --defaults-extra-file=/run/mysqld/health.cnf --connect-timeout=3 -N -B \
  -e "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = '$db'")
[[ "$tables" -gt 0 ]] || { echo "database $db has no tables"; exit 1; }
echo ok
