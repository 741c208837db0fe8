#!/bin/bash
# Cheap: the control channel answers (unbound's own status, no DNS query and no log line).
set -euo pipefail
unbound-control status >/dev/null || { echo "unbound not answering on its control socket"; exit 1; }
echo ok
