#!/bin/bash
# Cheap and silent: the server process listens on port 25 (no SMTP session, so no log line).
set -euo pipefail
awk 'NR > 1 && $4 == "0A" { print $2 }' /proc/net/tcp | grep -q ':0019$' || { echo "port 25 not listening"; exit 1; }
echo ok
