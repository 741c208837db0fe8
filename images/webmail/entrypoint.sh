#!/bin/bash
# Writes the per-stack values Roundcube reads (the des_key from the compose secret, the stack's host name
# for TLS name checks), gives a new database its schema (an existing one a newer Roundcube's updates),
# then runs php-fpm and nginx in the foreground. The container ends when either daemon does (Docker's
# restart policy acts); SIGTERM stops both gracefully (requests in flight may finish, up to 3 s).
set -euo pipefail

die() { echo "mailstack-webmail: $*" >&2; exit 1; }

key_file=/run/secrets/webmail_des_key
ca=/run/mailstack/tls/ca.crt
db=/var/lib/roundcube/db
include=/etc/roundcube/mailstack.inc.php
host=${MAILSTACK_HOSTNAME:-mail.mailstack.test}
label='[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?'

fpm='' web='' stopping=''
stop() { stopping=1; [[ -z "$fpm" ]] || kill -QUIT "$fpm" ${web:+"$web"} 2> /dev/null || true; }
trap stop TERM INT

[[ -f "$key_file" ]] || die "$key_file is missing (compose secret webmail_des_key; the orchestrator generates it)"
[[ "$host" =~ ^$label(\.$label)*$ ]] || die "MAILSTACK_HOSTNAME '$host' is not a host name"
[[ -s "$ca" ]] || die "$ca is missing: mount the stack's config/tls at /run/mailstack/tls"

# The secret is root's own file (0600 on the host, and so in here); Roundcube runs as www-data: the
# include it reads is root:www-data 0640. php writes it (var_export quotes any byte right) and gets the
# key on stdin, never on a command line (/proc/*/cmdline is world-readable).
umask 027
# shellcheck disable=SC2016  # PHP code: its $ are PHP's
MAILSTACK_PEER_NAME="$host" php -r '
  $key = rtrim((string) stream_get_contents(STDIN), "\r\n");
  if (strlen($key) !== 24) {
      fwrite(STDERR, "mailstack-webmail: the des_key must be 24 characters (Roundcube'\''s DES-EDE3-CBC key), not " . strlen($key) . "\n");
      exit(1);
  }
  $values = ["des_key" => $key, "hostname" => getenv("MAILSTACK_PEER_NAME")];
  echo "<?php\n// written by entrypoint.sh at every start (the webmail_des_key secret, MAILSTACK_HOSTNAME)\n",
       "\$mailstack = ", var_export($values, true), ";\n";
' < "$key_file" > "$include.partial"
chgrp www-data "$include.partial"
mv -f "$include.partial" "$include"
umask 022

# A new named volume is a copy of the image's empty directory (www-data's); chown again for any other.
chown www-data:www-data "$db"
chmod 0750 "$db"
# Before php-fpm starts, so that no request races it: on an empty file Roundcube runs
# SQL/sqlite.initial.sql when it connects; on an existing one updatedb applies what a newer Roundcube
# added (nothing otherwise).
runuser -u www-data -- /usr/share/roundcube/bin/updatedb.sh --package=roundcube --dir=/usr/share/roundcube/SQL

[[ -z "$stopping" ]] || exit 0
php-fpm8.2 --nodaemonize --fpm-config /etc/php/8.2/fpm/php-fpm.conf &
fpm=$!
nginx -g 'daemon off;' &
web=$!

status=0
wait -n "$fpm" "$web" || status=$?
if [[ -z "$stopping" ]]; then
  if kill -0 "$fpm" 2> /dev/null; then gone=nginx; else gone=php-fpm; fi
  echo "mailstack-webmail: $gone ended (status $status), stopping the other" >&2
  kill -TERM "$web" "$fpm" 2> /dev/null || true
fi
while kill -0 "$fpm" 2> /dev/null || kill -0 "$web" 2> /dev/null; do
  wait || true
done
[[ -z "$stopping" ]] || exit 0
exit $(( status == 0 ? 1 : status ))
