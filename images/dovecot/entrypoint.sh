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
# Disposable stacks answer a failed login within Dovecot's failure timer (0.5 s): no failure delay and
# no per-address penalty. Dovecot 2.3.19 has no setting for the penalty, and keeps it even with a delay of
# 0; the auth process leaves it off when it cannot connect to anvil's penalty socket (mode 0: nobody may).
# `make up` keeps production's 2 s delay and the penalty (up to 15 s per attempt after failures).
if [[ "${MAILSTACK_FAST_REFUSALS:-0}" == 1 ]]; then
  cat >> /etc/dovecot/local.conf <<'CONF'
auth_failure_delay = 0
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
CONF
fi

# Quotas and Sieve off (MAILSTACK_MAILBOX_FEATURES=0, for A/B benchmarks): no mail plugins anywhere.
if [[ "${MAILSTACK_MAILBOX_FEATURES:-1}" == 0 ]]; then
  cat >> /etc/dovecot/local.conf <<'CONF'
mail_plugins =
protocol lmtp {
  mail_plugins =
}
protocol imap {
  mail_plugins =
}
CONF
fi

# With the outside world (MAILSTACK_WORLD=1): what Sieve sends goes to Postfix's internal listener on
# 10025, which relays to other domains for this container's address only (Postfix's entrypoint); on 25
# a vacation reply or redirect to an outside address would be refused as relaying.
if [[ "${MAILSTACK_WORLD:-0}" == 1 ]]; then
  echo "submission_host = postfix:10025" >> /etc/dovecot/local.conf
fi

ipv4_number() {  # a.b.c.d -> 32-bit integer
  local a b c d
  IFS=. read -r a b c d <<<"$1"
  echo $(( (a << 24) | (b << 16) | (c << 8) | d ))
}
address_in() {  # the first IPv4 address of this container in the subnet $1 (a.b.c.d/n)
  local net=${1%/*} bits=${1#*/} address mask
  (( bits >= 0 && bits <= 32 )) || return 1
  mask=$(( bits == 0 ? 0 : (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF ))
  for address in $(hostname -I); do
    [[ "$address" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || continue
    if (( ($(ipv4_number "$address") & mask) == ($(ipv4_number "$net") & mask) )); then
      echo "$address"
      return 0
    fi
  done
  return 1
}

# LMTP, SASL auth and quota-status over TCP (MAILSTACK_LMTP_AUTH_TCP=1: compose.lmtp-tcp.yaml, Kubernetes),
# for a Postfix that shares no socket directory with Dovecot. They listen on MAILSTACK_INTERNAL_LISTEN only: an
# address (or name) on a network that only Postfix reaches (compose: Dovecot's fixed address on the internal
# `backend` network; Kubernetes: `*`, with a NetworkPolicy admitting only Postfix's pods). Dovecot 2.3 cannot
# refuse a connection by its peer's address, so where it listens, and who can route there, is the whole
# protection. The auth listener's name ends in "-client": Dovecot gives it the client type by that suffix (SASL
# logins with a password only; never "-master", "-userdb" or "-postmap", which answer user lookups without
# one). The unix sockets in private/ get mode 0, which Dovecot 2.3 takes as "no such listener": nothing keeps
# using them unnoticed.
if [[ "${MAILSTACK_LMTP_AUTH_TCP:-0}" == 1 ]]; then
  listen=${MAILSTACK_INTERNAL_LISTEN:-}
  if [[ "$listen" =~ ^[0-9.]+/[0-9]+$ ]]; then
    # A subnet (Docker Swarm: the backend overlay network's, where Dovecot's address is not known in advance):
    # this container's address in it.
    listen=$(address_in "$listen") || {
      echo "mailstack-dovecot: no address of this container is in MAILSTACK_INTERNAL_LISTEN=${MAILSTACK_INTERNAL_LISTEN} (addresses: $(hostname -I))" >&2
      exit 1
    }
  fi
  if [[ ! "$listen" =~ ^(\*|[A-Za-z0-9][A-Za-z0-9.:-]*)$ ]]; then
    echo "mailstack-dovecot: MAILSTACK_LMTP_AUTH_TCP=1 needs MAILSTACK_INTERNAL_LISTEN (where the internal listeners bind: a name, an address, a subnet or *)" >&2
    exit 1
  fi
  cat >> /etc/dovecot/local.conf <<CONF
service lmtp {
  inet_listener lmtp-internal {
    address = $listen
    port = 24
  }
  unix_listener /var/spool/postfix/private/dovecot-lmtp {
    mode = 0
  }
}
service auth {
  inet_listener auth-client {
    address = $listen
    port = 12345
  }
  unix_listener /var/spool/postfix/private/auth {
    mode = 0
  }
}
service quota-status {
  inet_listener quota-status {
    address = $listen
    port = 12340
  }
  unix_listener /var/spool/postfix/private/quota-status {
    mode = 0
  }
}
CONF
fi

# Settings the orchestrator rendered for this stack (a production server's), included last.
if [[ -r /run/mailstack/dovecot/overrides.conf ]]; then
  install -o root -g root -m 0644 /run/mailstack/dovecot/overrides.conf /etc/dovecot/mailstack-overrides.conf
else
  rm -f /etc/dovecot/mailstack-overrides.conf
fi

# A production server's mail root (e.g. /var/vmail, in its mail_location and user_query): a link to the
# mail volume, so that its settings and queries run verbatim.
if [[ -r /run/mailstack/dovecot/mail-root ]]; then
  root=$(< /run/mailstack/dovecot/mail-root)
  case "$root" in
    /var/mail/vmail|/var/mail/vmail/*) ;;
    /?*)
      # an empty directory of the image (/srv, /home) makes way for the link; anything else is refused
      if [[ -d "$root" && ! -L "$root" ]]; then
        rmdir "$root" 2>/dev/null || { echo "mailstack-dovecot: mail root $root is not empty in the image" >&2; exit 1; }
      elif [[ -e "$root" && ! -L "$root" ]]; then
        echo "mailstack-dovecot: mail root $root exists in the image" >&2; exit 1
      fi
      mkdir -p "$(dirname "$root")" && ln -sfn /var/mail/vmail "$root" ;;
    *) echo "mailstack-dovecot: mail root '$root' must be an absolute path" >&2; exit 1 ;;
  esac
fi

# Sockets left by a stopped Dovecot survive in the shared volume: remove them, Dovecot makes new ones.
rm -f /var/spool/postfix/private/auth /var/spool/postfix/private/dovecot-lmtp /var/spool/postfix/private/quota-status
chown postfix:root /var/spool/postfix/private && chmod 0700 /var/spool/postfix/private
chown vmail:vmail /var/mail/vmail && chmod 0750 /var/mail/vmail

exec "$@"
