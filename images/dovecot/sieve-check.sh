#!/bin/bash
# Compile a Sieve script read from standard input with Pigeonhole's sievec, storing nothing: exit 0 when
# it compiles; otherwise sievec's own messages (line numbers) on stderr and a non-zero exit. Lets the
# orchestrator check every script of a seed file before it changes anything.
set -euo pipefail
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat > "$dir/script.sieve"
sievec "$dir/script.sieve" "$dir/script.svbin"
