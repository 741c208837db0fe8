#!/bin/bash
# Runs unbound in the foreground and, every DNS_WATCH_INTERVAL seconds (default 1; 0 = off), reloads
# the records when the rendered file's mtime changed. The check is bash builtins only (no process is
# started while nothing changes). `docker exec <dns> dns-reload` applies a change at once and returns
# when it is served (or fails with the reason).
set -euo pipefail
src=${DNS_RECORDS:-/run/mailstack/dns/records.conf}
interval=${DNS_WATCH_INTERVAL:-1}
stamp=/var/lib/mailstack-dns/records.stamp
chown unbound:unbound /var/lib/mailstack-dns
dns-reload --init || cp /usr/share/mailstack/dns/empty-records.conf /var/lib/mailstack-dns/records.conf
unbound -d -c /etc/unbound/unbound.conf &
unbound_pid=$!
trap 'kill -TERM "$unbound_pid" 2>/dev/null; wait "$unbound_pid"; exit 0' TERM INT
if [[ "$interval" == 0 ]]; then wait "$unbound_pid"; exit $?; fi
rm -f /run/mailstack-dns.tick && mkfifo /run/mailstack-dns.tick
exec 8<>/run/mailstack-dns.tick
while kill -0 "$unbound_pid" 2>/dev/null; do
  read -r -t "$interval" -u 8 _ || true
  if [[ -e "$src" && ( ! -e "$stamp" || "$src" -nt "$stamp" || "$src" -ot "$stamp" ) ]]; then
    dns-reload || true
  fi
done
wait "$unbound_pid"
