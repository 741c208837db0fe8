#!/bin/bash
# Healthy when the milter answers: one option negotiation (SMFIC_OPTNEG, milter protocol 6) on 11332,
# which the proxy worker answers with its own SMFIC_OPTNEG, then SMFIC_QUIT. No scan, no log line.
set -euo pipefail
exec 3<>/dev/tcp/127.0.0.1/11332
# length 13, 'O', version 6, actions 0x1ff, protocol 0x1fffff
printf '\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff' >&3
reply=$(timeout 3 head -c 5 <&3 | od -An -tx1 | tr -d ' \n')
printf '\x00\x00\x00\x01Q' >&3
exec 3>&-
[[ "$reply" == 0000000d4f ]] || { echo "milter on 11332 answered '${reply:-nothing}'"; exit 1; }
echo ok
