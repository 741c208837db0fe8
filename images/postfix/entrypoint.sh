#!/bin/bash
# Prepare what changes per container start, then exec the daemon in the foreground.
set -euo pipefail

log() { echo "mailstack-postfix: $*" >&2; }

# SQL maps rendered by the orchestrator (mounted read-only): install them readable by proxymap.
if compgen -G "/run/mailstack/postfix/*.cf" >/dev/null; then
  install -o root -g postfix -m 0640 /run/mailstack/postfix/*.cf /etc/postfix/sql/
else
  log "no SQL maps in /run/mailstack/postfix: is the state directory mounted?"
fi

postconf -e "myhostname=${MAILSTACK_HOSTNAME:-mail.mailstack.test}"
if [[ "${MAILSTACK_FAST_RETRY:-0}" == 1 ]]; then
  # Tests: retry deferred mail within seconds instead of Postfix's minutes.
  postconf -e queue_run_delay=1s minimal_backoff_time=1s maximal_backoff_time=4s
fi

# Postfix's chrooted services need resolv.conf, hosts, services, ... inside the chroot. Docker writes
# resolv.conf and hosts per container, so the copy is made on every start (Debian's own script).
/usr/lib/postfix/configure-instance.sh -

postfix check

if [[ "$*" == "postfix start-fg" ]]; then
  /usr/local/bin/mysql-watch.sh &
fi
exec "$@"
