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

# /etc/mailname as Debian's postinst writes it (the host's name; `myorigin = /etc/mailname` reads it).
cat /proc/sys/kernel/hostname > /etc/mailname

# The image's main.cf and master.cf, then this start's settings over them (a restarted container starts
# from the same files). myhostname is Postfix's default: the container's hostname (compose sets it).
install -m 0644 /usr/share/mailstack/postfix/main.cf /usr/share/mailstack/postfix/master.cf /etc/postfix/
settle+=(/etc/postfix/main.cf /etc/postfix/master.cf)
# main.cf settings are collected and written by one `postconf -e` (each call parses all of main.cf and its
# defaults: ~15 ms of CPU, while the whole stack starts on two cores), in order; edit() writes them before
# any other kind of postconf call, and at the end.
main_cf=()
edit() {
  (( ${#main_cf[@]} == 0 )) || postconf -e "${main_cf[@]}" || return
  main_cf=()
  (( $# == 0 )) || postconf "$@"
}
if [[ "${MAILSTACK_FAST_RETRY:-0}" == 1 ]]; then
  # Tests: retry deferred mail within seconds instead of Postfix's minutes.
  main_cf+=(queue_run_delay=1s minimal_backoff_time=1s maximal_backoff_time=4s)
fi
if [[ "${MAILSTACK_FAST_REFUSALS:-0}" == 1 ]]; then
  # Disposable stacks: a refused command is answered at once (Dovecot's side: auth_failure_delay = 0).
  main_cf+=(smtpd_error_sleep_time=0)
fi

# Every client on the host reaches the published ports from the Docker bridge gateway (Docker's proxy
# connects from there), so anvil's per-client limits would be one limit shared by all of them: 30 AUTH
# commands a minute for every script and test suite on the machine together. The gateway is exempt;
# clients with an address of their own (containers on the stack's network, remote hosts reaching a port
# published on a public address) keep the limits. Failed logins stay slowed down by Dovecot's penalty.
gateway_hex=$(awk '$2 == "00000000" { print $3; exit }' /proc/net/route)
if [[ "$gateway_hex" =~ ^[0-9A-Fa-f]{8}$ ]]; then
  gateway=$(printf '%d.%d.%d.%d' "0x${gateway_hex:6:2}" "0x${gateway_hex:4:2}" "0x${gateway_hex:2:2}" "0x${gateway_hex:0:2}")
  main_cf+=("smtpd_client_event_limit_exceptions=\$mynetworks ${gateway}")
else
  log "no default route: anvil limits apply to every client"
fi

# Settings the orchestrator rendered for this stack (a schema flavour's lookup tables, a production
# server's settings): a postconf call per line, "FLAG<TAB>ARGUMENT", applied in order (consecutive -e lines
# in one call).
overrides=/run/mailstack/postfix/postconf.overrides
if [[ -r "$overrides" ]]; then
  line=0 pending=
  while IFS=$'\t' read -r flag argument || [[ -n "$flag" ]]; do
    line=$((line + 1))
    case "$flag" in
      ''|'#'*) ;;
      -e) main_cf+=("$argument"); pending+="${pending:+, }$line" ;;
      -X|-M|-MX|-P|-PX)
        edit || { log "$overrides: postconf -e refused a setting of line(s) ${pending:-?} or of this image"; exit 1; }
        pending=
        edit "$flag" "$argument" || { log "$overrides:$line: postconf $flag refused '$argument'"; exit 1; } ;;
      *) log "$overrides:$line: unknown flag '$flag'"; exit 1 ;;
    esac
  done < "$overrides"
fi
if [[ "${MAILSTACK_WORLD:-0}" == 1 ]]; then
  # The outside world (compose.world.yaml): rspamd as the milter of every smtpd (DKIM signing of submitted
  # mail, SPF/DKIM/DMARC verdicts and spam scores, GTUBE and DMARC p=reject refused); while it cannot be
  # reached mail is refused with 451, never accepted unchecked. Outbound mail goes to the MX the stack's
  # DNS names (the outside MX) over TLS verified against the stack's CA.
  main_cf+=(smtpd_milters=unix:/milter/rspamd.sock milter_default_action=tempfail milter_protocol=6
    smtp_tls_security_level=verify smtp_tls_CAfile=/run/mailstack/tls/ca.crt smtp_tls_loglevel=1)
  # Mail the stack itself makes (Sieve's vacation replies, redirects, reject notices, from Dovecot's
  # fixed address): may go to any domain, from that address only; not published on the host.
  [[ "${MAILSTACK_DOVECOT_IP:-}" =~ ^[0-9.]+$ ]] || { log "MAILSTACK_DOVECOT_IP must be an IPv4 address"; exit 1; }
  edit -M "10025/inet=10025 inet n - y - - smtpd"
  postconf -P "10025/inet/syslog_name=postfix/internal" "10025/inet/mynetworks=${MAILSTACK_DOVECOT_IP}/32" \
    "10025/inet/smtpd_client_restrictions=permit_mynetworks,reject" \
    "10025/inet/smtpd_relay_restrictions=permit_mynetworks,reject" \
    "10025/inet/smtpd_recipient_restrictions=permit_mynetworks,reject"
fi
if [[ "${MAILSTACK_LMTP_AUTH_TCP:-0}" == 1 ]]; then
  # Dovecot's LMTP, SASL auth and quota-status over TCP (compose.lmtp-tcp.yaml, Kubernetes), on a network only
  # Postfix and Dovecot share; after the overrides, which name the unix sockets (a production copy's too).
  # The LMTP client looks the name up as the rest of the system does (native: /etc/hosts, where compose
  # writes Dovecot's fixed address, then DNS with resolv.conf's search list, which a Kubernetes Service's
  # short name needs). A name that does not resolve would bounce the mail (5.3.0 with native lookups, 5.4.4
  # with dns), not defer it: it must resolve while Dovecot is down too (compose: /etc/hosts; Kubernetes: a
  # ClusterIP Service, never headless);
  # where it cannot (Docker Swarm's dnsrr alias), lmtp-dsn-filter.regexp turns that bounce into a deferral.
  # A socket fails at once when Dovecot is gone; a TCP connect to a vanished address hangs until its timeout
  # (measured: 35-100 s, the policy client's default is 100 s): quota-status gets 5 s (it answers in ms; on a
  # timeout the recipient gets DUNNO, as with no socket), LMTP's connect 10 s (then the mail is deferred).
  dovecot=${MAILSTACK_DOVECOT_INTERNAL:-}
  [[ "$dovecot" =~ ^[A-Za-z0-9][A-Za-z0-9.-]*$ ]] || { log "MAILSTACK_LMTP_AUTH_TCP=1 needs MAILSTACK_DOVECOT_INTERNAL (Dovecot's internal host name)"; exit 1; }
  main_cf+=(lmtp_host_lookup=native lmtp_connect_timeout=10s "virtual_transport=lmtp:inet:${dovecot}:24"
    lmtp_delivery_status_filter=regexp:/usr/share/mailstack/postfix/lmtp-dsn-filter.regexp
    "smtpd_sasl_path=inet:${dovecot}:12345"
    "quota_status_check=check_policy_service { inet:${dovecot}:12340, timeout=5s, default_action=DUNNO, try_limit=1 }")
fi
if [[ "${MAILSTACK_MAILBOX_FEATURES:-1}" == 0 ]]; then
  # No quota-status policy at RCPT (Dovecot runs without its quota plugin); after the overrides, which may
  # name the flavour's quota map.
  main_cf+=(quota_limited_check= quota_status_check= smtpd_restriction_classes=)
fi
edit || { log "postconf -e refused a setting of this start (the overrides' -e lines, this image's): see above"; exit 1; }

# Postfix re-reads a config file modified within the last second, "pausing to let it settle" for a
# second or two in every process that opens it (dict_load_file). Backdate what this start wrote.
if (( ${#settle[@]} )); then
  touch -d "-2 seconds" "${settle[@]}"
fi

# Postfix's chrooted services need resolv.conf, hosts, services, ... inside the chroot. Docker writes
# resolv.conf and hosts per container, so the copy is made on every start (Debian's own script). For Postfix
# itself it runs beside the integrity check below (they touch different files), and master waits for both.
if [[ "$*" != "postfix start-fg" ]]; then
  /usr/lib/postfix/configure-instance.sh -
  exec "$@"
fi
/usr/lib/postfix/configure-instance.sh - &
chroot_copy=$!
/usr/local/bin/mysql-watch.sh &
watcher=$!

# What `postfix start-fg` does, with two changes. Postfix's log goes through log-batch: one write to Docker
# per 20 ms instead of one per line (Docker's log path costs about as much CPU per line as the Postfix
# daemon that logged it). And this shell stays PID 1, Postfix's master its child, to pass signals on and,
# when Postfix stops, to wait until log-batch has written the last lines (the kernel kills what is left
# of a container once PID 1 exits).
exec {log}> >(exec /usr/local/bin/log-batch)
batcher=$!
# Exit once log-batch has written everything: it ends when the last writer has closed the pipe.
exit_after_log() {
  exec {log}>&-
  wait "$batcher" || true
  exit "$1"
}
# start-fg's two checks (postfix-script's check-fatal and check-warn, which `postfix check` runs), split: the
# fatal one (missing queue directories made, main.cf and master.cf there, queue file names) before master, the
# one that only warns (owners, modes, the chroot's copies against the system's files) once master runs, so its
# ~0.1-0.2 s (find and cmp over the chroot) is not on the way to the first SMTP session. Its warnings go to the
# log as before.
if ! postfix check-fatal >&"$log" 2>&1; then  # postfix(1) hands it to postfix-script, as start-fg does
  # Postfix tells why only to a terminal while its log service is not running: ask again with one.
  script -qec "postfix check" /dev/null 2>&1 | tr -d '\r' >&"$log" || true
  echo "mailstack-postfix: postfix check failed: Postfix cannot start with this configuration" >&"$log"
  exit_after_log 1
fi
if ! wait "$chroot_copy"; then
  echo "mailstack-postfix: configure-instance.sh could not copy the system's files into Postfix's chroot" >&"$log"
  exit_after_log 1
fi

# A stop (docker stop, compose restart, a Swarm update: SIGTERM) drains Postfix before master goes. Master's
# own SIGTERM kills its whole process group at once: an LMTP client killed after Dovecot stored a message
# but before it marked the recipient done in the queue file makes the next start deliver that message
# again, and every SMTP session is cut wherever it is. So first a reload of master with two changes
# (main.cf and master.cf are installed afresh at every start, above: neither outlives this stop):
# - master_service_disable = qmgr/unix pickup/unix: master kills the queue manager (and pickup), which the
#   queue is made to survive at any moment: no new delivery starts. The deliveries in flight go on and mark
#   their recipients done, then their agents exit (after a reload every process exits once it is idle).
#   What qmgr had in the active queue stays there: the next qmgr moves it to incoming as it starts and
#   delivers it at once (not to the deferred queue, whose back-off would hold it for minutes).
# - every smtpd service refuses new sessions at connect with 421 (RFC 5321: closing the channel, try again
#   later), while the sessions in progress keep their smtpd and its settings. Not master_service_disable =
#   inet: master kills every smtpd of a disabled service at once, busy or not (master_avail_cleanup ->
#   master_delete_children in Postfix 3.7), which is what the drain is for avoiding. The listeners close
#   when master stops.
# Every smtpd and delivery agent master starts after the reload carries a marker in its arguments: those
# are never waited for (an smtpd that refuses; an agent that has nothing to do, qmgr being gone, but stays
# until its idle timeout). The processes that came before exit once they are done.
# Then a bounded poll of Postfix's processes: sessions get drain_sessions seconds to end (a client holding
# its session open, idle or sending, is cut then, as every session was without a drain: what it got no 250
# for it sends again), deliveries drain_deliveries seconds from the signal; then master is stopped as
# before. The whole drain stays well within Docker's default stop grace period (10 s, also Swarm's) and
# Stack.down's timeout (10 s); an idle stop takes about 0.25 s more than before.
drain_sessions=${MAILSTACK_DRAIN_SESSIONS:-4}
drain_deliveries=${MAILSTACK_DRAIN_DELIVERIES:-6}
refusal='check_client_access static:{421 4.3.2 Service shutting down, try again later}'
marker='mailstack_drain=yes'  # a parameter no Postfix program reads
agents='lmtp|smtp|local|virtual|pipe|error|discard'

# Postfix's processes still at work, from /proc (no procps in the image): sessions (smtpd), deliveries
# (delivery agents), both started before the reload (without the marker), and managers (qmgr and pickup,
# until master has killed them).
at_work() {
  local proc name argv
  sessions=() deliveries=() managers=()
  for proc in /proc/[0-9]*; do
    { read -r name < "$proc/comm"; } 2>/dev/null || continue
    if [[ "$name" == qmgr || "$name" == pickup ]]; then
      managers+=("${proc#/proc/}")
    elif [[ "$name" == smtpd || "$name" =~ ^($agents)$ ]]; then
      { mapfile -d '' -t argv < "$proc/cmdline"; } 2>/dev/null || continue
      [[ " ${argv[*]} " != *" $marker "* ]] || continue
      if [[ "$name" == smtpd ]]; then sessions+=("${proc#/proc/}"); else deliveries+=("${proc#/proc/}"); fi
    fi
  done
}

now_ms() { echo $(( ${EPOCHREALTIME//[!0-9]/} / 1000 )); }

drain() {
  local start now service command edits=() cut=0 in_flight=
  start=$(now_ms)
  kill "$watcher" 2>/dev/null || true  # no reload for MariaDB's sake from now on
  postlog -t postfix/postfix-script -p info "stopping the Postfix mail system" >&"$log" 2>&1 || true
  # Each postconf call reads main.cf, and pauses while main.cf is less than a second old (see above): so
  # main.cf is backdated after its edit. No postconf call after master.cf's (it would warn that the marker
  # is no parameter it knows). Every smtpd service refuses, whatever its type (a production copy's
  # postscreen hands its clients to an smtpd of type pass).
  while read -r service command; do
    edits+=("$service/$marker")
    if [[ "$command" == smtpd ]]; then
      edits+=("$service/smtpd_delay_reject=no" "$service/smtpd_client_restrictions=\$mailstack_shutting_down")
    fi
  done < <(postconf -M | awk -v programs="^(smtpd|$agents)\$" '$8 ~ programs { print $1 "/" $2, $8 }')
  if ! { postconf -e "master_service_disable=qmgr/unix pickup/unix" "mailstack_shutting_down=$refusal" \
         && touch -d "-2 seconds" /etc/postfix/main.cf \
         && { (( ${#edits[@]} == 0 )) || postconf -P "${edits[@]}"; } \
         && touch -d "-2 seconds" /etc/postfix/master.cf \
         && kill -HUP "$master" 2>/dev/null; }; then
    log "stopping: Postfix could not be set to drain: stopping it at once"
    return
  fi
  while :; do
    at_work
    now=$(now_ms)
    # The first look once qmgr is gone (master has done the reload): the agents left are delivering.
    if [[ -z "$in_flight" ]] && (( ${#managers[@]} == 0 )); then
      in_flight=${#deliveries[@]}
    fi
    (( ${#sessions[@]} + ${#deliveries[@]} + ${#managers[@]} > 0 )) || break
    if (( now - start >= drain_deliveries * 1000 )); then
      log "stopping: ${#deliveries[@]} delivery agent(s), ${#managers[@]} queue manager(s) and" \
        "${#sessions[@]} session(s) still at work after ${drain_deliveries}s: stopped with Postfix"
      break
    fi
    if (( cut == 0 && ${#sessions[@]} > 0 && now - start >= drain_sessions * 1000 )); then
      log "stopping: cutting ${#sessions[@]} SMTP session(s) still open after ${drain_sessions}s"
      cut=${#sessions[@]}
      kill -TERM "${sessions[@]}" 2>/dev/null || true
    fi
    sleep 0.05  # poll interval: Postfix's processes tell nobody when they are done; bounded by the deadlines
  done
  log "stopping: drained in $(( $(now_ms) - start )) ms (deliveries in flight at the reload: ${in_flight:-?}," \
    "sessions cut: $cut)"
}

# SIGTERM or SIGINT: drain, then stop master (which kills what is left of Postfix). `wait` below returns
# once the trap is done, and waits again until master has exited.
stop() {
  [[ -z "$stopping" ]] || return 0
  stopping=1
  [[ -n "$master" ]] || return 0
  drain || true
  kill -TERM "$master" 2>/dev/null || true
}

postlog -t postfix/postfix-script -p info "starting the Postfix mail system" >&"$log" 2>&1
master= stopping=
trap stop TERM INT
trap '[[ -z "$master" ]] || kill -HUP "$master" 2>/dev/null || true' HUP
/usr/lib/postfix/sbin/master -s >&"$log" 2>&1 &
master=$!
postfix check-warn >&"$log" 2>&1 &
[[ -z "$stopping" ]] || kill -TERM "$master" 2>/dev/null || true  # asked to stop while starting

status=0
until wait "$master"; status=$?; ! kill -0 "$master" 2>/dev/null; do :; done
# Postfix's master ends a requested stop by killing itself with the same signal: that is a clean stop
[[ -n "$stopping" && "$status" -gt 128 ]] && status=0
exit_after_log "$status"
