#!/bin/bash
# Write the per-stack values Roundcube reads (des_key from the compose secret, the stack's host name for
# TLS name checks), make the database's directory the web server's, apply schema updates to an existing
# database, then run php-fpm and nginx in the foreground: the container ends when either does (Docker's
# restart policy acts), and SIGTERM stops both.
set -euo pipefail

die() { echo "mailstack-webmail: $*" >&2; exit 1; }

key_file=/run/secrets/webmail_des_key
[[ -r "$key_file" ]] || die "$key_file is missing: the orchestrator generates it (secrets/webmail_des_key)"
key=$(tr -d '\r\n' < "$key_file")
[[ "$key" =~ ^[A-Za-z0-9]{24}$ ]] || die "$key_file must hold 24 letters or digits (Roundcube's des_key)"
host=${MAILSTACK_HOSTNAME:-mail.mailstack.test}
[[ "$host" =~ ^[a-z0-9.-]+$ ]] || die "MAILSTACK_HOSTNAME must be a host name"
[[ -r /run/mailstack/tls/ca.crt ]] || die "the stack's CA (/run/mailstack/tls/ca.crt) is not mounted"

umask 027
printf "<?php\n// written by entrypoint.sh at every start\n\$config['des_key'] = '%s';\n\$mailstack_hostname = '%s';\n" \
  "$key" "$host" > /etc/roundcube/mailstack.inc.php
chgrp www-data /etc/roundcube/mailstack.inc.php
umask 022

# a fresh named volume is root's
install -d -o www-data -g www-data -m 0750 /var/lib/mailstack-webmail
if [[ -s /var/lib/mailstack-webmail/roundcube.sqlite ]]; then
  runuser -u www-data -- /usr/share/roundcube/bin/updatedb.sh --package=roundcube \
    --dir=/usr/share/roundcube/SQL > /dev/null
fi

php-fpm8.2 --nodaemonize --fpm-config /etc/php/8.2/fpm/php-fpm.conf &
fpm=$!
nginx -g 'daemon off;' &
web=$!
stopping=0
trap 'stopping=1; kill -TERM "$fpm" "$web" 2> /dev/null || true' TERM INT
status=0
wait -n "$fpm" "$web" || status=$?
if (( ! stopping )); then
  echo "mailstack-webmail: $( kill -0 "$fpm" 2> /dev/null && echo nginx || echo php-fpm ) ended (status $status)" >&2
  kill -TERM "$fpm" "$web" 2> /dev/null || true
fi
wait "$fpm" "$web" 2> /dev/null || true
(( stopping )) && exit 0
exit "${status:-1}"
