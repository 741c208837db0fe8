#!/bin/bash
# Postfix's MySQL client marks a failed server down for a fixed 60 s (not configurable before
# Postfix 3.9), so every lookup answers "451 Temporary lookup failure" for a minute after MariaDB comes
# back. This watcher notices MariaDB coming back, or restarting (its uptime goes down), within about a
# second and reloads Postfix, whose processes then reconnect at once. It only reads the server's uptime.
set -uo pipefail
interval=${MAILSTACK_MYSQL_WATCH_INTERVAL:-1}
probe=/etc/postfix/sql/server_uptime.cf
last=""
while sleep "$interval"; do
  [[ -r "$probe" ]] || continue
  uptime=$(postmap -q uptime "mysql:$probe" 2>/dev/null) || uptime=down
  [[ "$uptime" =~ ^[0-9]+$|^down$ ]] || uptime=down
  if [[ "$uptime" != down && -n "$last" ]]; then
    if [[ "$last" == down ]]; then
      echo "mailstack-postfix: MariaDB is back: reloading Postfix so lookups reconnect now" >&2
      postfix reload >/dev/null 2>&1 || true
    elif (( uptime < last )); then
      echo "mailstack-postfix: MariaDB restarted: reloading Postfix so lookups reconnect now" >&2
      postfix reload >/dev/null 2>&1 || true
    fi
  fi
  last=$uptime
done
