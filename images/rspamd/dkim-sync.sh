#!/bin/bash
# Copy the DKIM keys from the orchestrator's directory (/run/mailstack/dkim, read-only, files owner-only
# on the host: only root in the container can read them) into /run/rspamd/dkim, owned by _rspamd.
#   <domain>.<selector>.key   a PEM private key (RSA 2048)
#   selectors.map             "<domain> <selector>" lines: the key each domain signs with now
# Run by the entrypoint, and by the orchestrator after `dkim rotate` (docker exec). No reload needed:
# measured on 3.4, rspamd re-reads the map when its mtime changes (within a second: the next message
# was signed with the new selector) and reloads a key file whose mtime changed.
set -euo pipefail
src=/run/mailstack/dkim
dst=/run/rspamd/dkim
install -d -o _rspamd -g _rspamd -m 0700 "$dst"

if [[ -d "$src" ]]; then
  shopt -s nullglob
  for key in "$src"/*.key; do
    install -o _rspamd -g _rspamd -m 0600 "$key" "$dst/.$(basename "$key").tmp"
    mv -f "$dst/.$(basename "$key").tmp" "$dst/$(basename "$key")"
  done
  for key in "$dst"/*.key; do
    [[ -e "$src/$(basename "$key")" ]] || rm -f "$key"
  done
fi
# The map last, replaced in one rename: it never names a key that is not there yet.
if [[ -r "$src/selectors.map" ]]; then
  install -o _rspamd -g _rspamd -m 0600 "$src/selectors.map" "$dst/.selectors.map.tmp"
else
  install -o _rspamd -g _rspamd -m 0600 /dev/null "$dst/.selectors.map.tmp"
fi
mv -f "$dst/.selectors.map.tmp" "$dst/selectors.map"
