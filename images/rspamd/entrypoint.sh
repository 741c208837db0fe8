#!/bin/bash
# Write what depends on the environment into /etc/rspamd/mailstack.d/, copy the DKIM keys, then exec
# rspamd in the foreground (it starts as root, binds, and runs its workers as _rspamd).
set -euo pipefail
conf=/etc/rspamd/mailstack.d

# The stack's DNS server: every lookup (SPF, DKIM keys, DMARC, HELO names) goes there and nowhere
# else. Unset: rspamd reads /etc/resolv.conf (Docker's resolver, which forwards to the host's).
dns=${MAILSTACK_DNS_SERVER:-}
{
  echo "# written by entrypoint.sh at every start"
  if [[ -n "$dns" ]]; then
    [[ "$dns" =~ ^[0-9a-fA-F.:]+$ ]] || { echo "mailstack-rspamd: MAILSTACK_DNS_SERVER must be an IP address" >&2; exit 1; }
    [[ "$dns" == *:* ]] && dns="[$dns]"
    printf 'dns {\n  nameserver = ["%s:53"];\n  timeout = 1s;\n  retransmits = 2;\n  sockets = 4;\n}\n' "$dns"
  fi
} > "$conf/options.inc"

# DMARC p=reject failures refused with 5xx (MAILSTACK_DMARC_REJECT=1, the default), p=quarantine
# marked as spam; 0: the result is only reported (Authentication-Results, symbols).
case "${MAILSTACK_DMARC_REJECT:-1}" in
  1) printf 'actions {\n  reject = "reject";\n  quarantine = "add header";\n}\n' > "$conf/dmarc.conf" ;;
  0) echo "# MAILSTACK_DMARC_REJECT=0: no action from DMARC policies" > "$conf/dmarc.conf" ;;
  *) echo "mailstack-rspamd: MAILSTACK_DMARC_REJECT must be 1 or 0" >&2; exit 1 ;;
esac

/usr/local/bin/dkim-sync.sh
/usr/local/bin/hs-cache-pin.sh

exec "$@"
