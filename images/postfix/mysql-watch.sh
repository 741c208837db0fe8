#!/bin/bash
# Postfix's MySQL client marks a failed server down for a fixed 60 s (not configurable before
# Postfix 3.9), so every lookup answers "451 Temporary lookup failure" for a minute after MariaDB comes
# back. This watcher notices MariaDB coming back, or having restarted, within about a second and reloads
# Postfix, whose processes then reconnect at once. It only reads when the server started, its uptime and the
# id of its run (schema.SERVER_UPTIME_QUERY).
#
# A restart is recognised by the run's id, which the MariaDB image makes anew at every start, not only by a
# probe that failed: a probe can miss a short outage entirely (it was sleeping, or slow under load). A map
# rendered before the id existed answers without it; then the start time (now - uptime) tells instead, which
# misses a restart within a second or two of the old server's start (whole seconds on both sides: it may
# wobble by one), and comparing uptimes alone misses a restart whenever the new server has been up longer
# than the old one was at the last probe.
set -uo pipefail
# Every 2 s while MariaDB answers (a postmap costs ~5 ms of CPU: the watcher is most of an idle stack's
# CPU), every 0.5 s while it does not, so that Postfix follows it back at once.
up_interval=${MAILSTACK_MYSQL_WATCH_INTERVAL:-2}
down_interval=${MAILSTACK_MYSQL_WATCH_DOWN_INTERVAL:-0.5}
interval=$up_interval
probe=${MAILSTACK_MYSQL_WATCH_PROBE:-/etc/postfix/sql/server_uptime.cf}
last_state=""   # "up" or "down"
last_start=0
last_uptime=0
last_run=""    # the id of the server's run, where the probe gives one

reload() {
  echo "mailstack-postfix: MariaDB $1: reloading Postfix so lookups reconnect now" >&2
  postfix reload >/dev/null 2>&1 || true
}

# The first probe at once: a MariaDB restart in the first interval after Postfix started would otherwise
# be this watcher's baseline, never seen as a restart (Postfix's processes connected to the old server).
first=1
while (( first )) || sleep "$interval"; do
  first=0
  [[ -r "$probe" ]] || continue
  # Bounded: a server that accepts the connection and then stalls (shutting down, starting) must not
  # hang the watcher, which would then never reload Postfix again.
  answer=$(timeout "${MAILSTACK_MYSQL_WATCH_TIMEOUT:-5}" postmap -q uptime "mysql:$probe" 2>/dev/null) || answer=""
  if [[ ! "$answer" =~ ^([0-9]+)\ ([0-9]+)(\ ([0-9a-f-]{36}))?$ ]]; then
    last_state=down interval=$down_interval
    continue
  fi
  interval=$up_interval
  start=${BASH_REMATCH[1]} uptime=${BASH_REMATCH[2]} run=${BASH_REMATCH[4]}
  if [[ "$last_state" == down ]]; then
    reload "is back"
  elif [[ "$last_state" == up && -n "$run" && -n "$last_run" ]]; then
    [[ "$run" == "$last_run" ]] || reload "restarted"
  elif [[ "$last_state" == up ]] && (( start > last_start + 1 || uptime < last_uptime )); then
    reload "restarted"
  fi
  last_state=up last_start=$start last_uptime=$uptime last_run=$run
done
