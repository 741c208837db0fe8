#!/bin/bash
# Dovecot is healthy when IMAPS/POP3S/ManageSieve listen and auth answers a userdb lookup through SQL
# (exit 0: found, 67: no such user; anything else, e.g. 75, means SQL or auth is broken).
set -uo pipefail
listening=$(awk 'NR > 1 && $4 == "0A" { print $2 }' /proc/net/tcp)
for port_hex in 03E1 03E3 105E; do  # 993 995 4190
  grep -q ":${port_hex}\$" <<<"$listening" || { echo "port 0x${port_hex} not listening"; exit 1; }
done
doveadm user healthcheck@mailstack.invalid >/dev/null 2>&1
status=$?
if [[ $status -ne 0 && $status -ne 67 ]]; then
  echo "auth lookup through SQL failed (doveadm user exit $status)"
  exit 1
fi
echo ok
