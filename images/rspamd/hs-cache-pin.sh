#!/bin/bash
# Rspamd 3.4 writes every multipattern hyperscan database back to its cache after loading it from there
# (rspamd_multipattern_compile calls rspamd_multipattern_try_save_hs whether it compiled or loaded;
# fixed upstream after 3.4): for the public-suffix list that is 40 MB serialized, fsync'd and renamed
# over <hash>.hsmp at every start, the main process's critical path. The save opens <hash>.hsmp.tmp
# with O_EXCL and gives up quietly when it exists, so an empty one beside each cached database keeps
# the cache as built. Only databases that exist are pinned: one compiled for another CPU (another
# hash) is saved once, as before, and pinned at the next start. The cache cleanup at rspamd's exit
# globs *.hsmp and *.unser, never *.hsmp.tmp.
set -euo pipefail
shopt -s nullglob
for cached in /var/lib/rspamd/*.hsmp; do
  [[ -e "$cached.tmp" ]] || : > "$cached.tmp"
done
