#!/bin/bash
# Prepare what changes per container start, then exec the daemon in the foreground.
set -euo pipefail

if [[ -r /run/mailstack/dovecot/dovecot-sql.conf.ext ]]; then
  install -o root -g root -m 0600 /run/mailstack/dovecot/dovecot-sql.conf.ext /etc/dovecot/
else
  echo "mailstack-dovecot: /run/mailstack/dovecot/dovecot-sql.conf.ext missing: is the state directory mounted?" >&2
fi

# fsync after each delivery: "optimized" (Dovecot's default, production), or "never" for disposable test
# stacks (a killed container loses nothing: the kernel keeps its page cache; only a host crash could).
fsync=${MAILSTACK_MAIL_FSYNC:-optimized}
case "$fsync" in
  optimized|always|never) printf 'mail_fsync = %s\n' "$fsync" > /etc/dovecot/local.conf ;;
  *) echo "mailstack-dovecot: MAILSTACK_MAIL_FSYNC must be optimized, always or never" >&2; exit 1 ;;
esac
# Disposable stacks answer a failed login at once: no failure delay, and with it no per-address penalty
# (Dovecot updates the penalty only for delayed failures). `make up` keeps production's 2 s and penalty.
if [[ "${MAILSTACK_FAST_REFUSALS:-0}" == 1 ]]; then
  echo 'auth_failure_delay = 0' >> /etc/dovecot/local.conf
fi

# Settings the orchestrator rendered for this stack (a production server's), included last.
if [[ -r /run/mailstack/dovecot/overrides.conf ]]; then
  install -o root -g root -m 0644 /run/mailstack/dovecot/overrides.conf /etc/dovecot/mailstack-overrides.conf
else
  rm -f /etc/dovecot/mailstack-overrides.conf
fi

# Sockets left by a stopped Dovecot survive in the shared volume: remove them, Dovecot makes new ones.
rm -f /var/spool/postfix/private/auth /var/spool/postfix/private/dovecot-lmtp
chown postfix:root /var/spool/postfix/private && chmod 0700 /var/spool/postfix/private
chown vmail:vmail /var/mail/vmail && chmod 0750 /var/mail/vmail

exec "$@"
