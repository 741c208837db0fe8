#!/bin/bash
# Prepare what changes per container start, then exec the daemon in the foreground.
set -euo pipefail

log() { echo "mailstack-postfix: $*" >&2; }
settle=()  # config files this start writes (see the end)

# SQL maps rendered by the orchestrator (mounted read-only): install them readable by Postfix processes.
if compgen -G "/run/mailstack/postfix/*.cf" >/dev/null; then
  install -o root -g postfix -m 0640 /run/mailstack/postfix/*.cf /etc/postfix/sql/
  settle+=(/etc/postfix/sql/*.cf)
else
  log "no SQL maps in /run/mailstack/postfix: is the state directory mounted?"
fi

# myhostname is Postfix's default: the container's hostname (compose sets it to MAILSTACK_HOSTNAME).
if [[ "${MAILSTACK_FAST_RETRY:-0}" == 1 ]]; then
  # Tests: retry deferred mail within seconds instead of Postfix's minutes.
  postconf -e queue_run_delay=1s minimal_backoff_time=1s maximal_backoff_time=4s
  settle+=(/etc/postfix/main.cf)
fi

# Postfix re-reads a config file modified within the last second, "pausing to let it settle" for a
# second or two in every process that opens it (dict_load_file). Backdate what this start wrote.
if (( ${#settle[@]} )); then
  touch -d "-2 seconds" "${settle[@]}"
fi

# Postfix's chrooted services need resolv.conf, hosts, services, ... inside the chroot. Docker writes
# resolv.conf and hosts per container, so the copy is made on every start (Debian's own script).
/usr/lib/postfix/configure-instance.sh -

if [[ "$*" == "postfix start-fg" ]]; then
  /usr/local/bin/mysql-watch.sh &
fi
exec "$@"
