#!/bin/bash
# Quiet health: master alive and listening on 25/465/587, plus a real SMTP greeting at most once a minute
# (each greeting costs two log lines).
set -euo pipefail
pid=$(< /var/spool/postfix/pid/master.pid)
kill -0 "${pid//[[:space:]]/}"
listening=$(awk 'NR > 1 && $4 == "0A" { print $2 }' /proc/net/tcp)
for port_hex in 0019 01D1 024B; do
  grep -q ":${port_hex}\$" <<<"$listening" || { echo "port 0x${port_hex} not listening"; exit 1; }
done
stamp=/run/mailstack-health.greeted
if [[ ! -e "$stamp" || -n $(find "$stamp" -mmin +1) ]]; then
  exec 3<>/dev/tcp/127.0.0.1/25
  IFS= read -r -t 5 greeting <&3
  printf 'QUIT\r\n' >&3
  [[ "$greeting" == 220* ]] || { echo "smtpd greeting: ${greeting:-none}"; exit 1; }
  touch "$stamp"
fi
echo ok
