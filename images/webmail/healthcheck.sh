#!/bin/bash
# Healthy when Roundcube's login page comes back through nginx and php-fpm (Roundcube's config, its
# SQLite session store and its templates included): HTTP 200 with the login form's user field. No curl
# in the image: bash's /dev/tcp; the user agent keeps it out of the access log (nginx.conf).
set -euo pipefail
exec 3<> /dev/tcp/127.0.0.1/80
printf 'GET /?_task=login HTTP/1.0\r\nHost: localhost\r\nUser-Agent: mailstack-healthcheck\r\n\r\n' >&3
reply=$(timeout 4 cat <&3 || true)
exec 3>&-
status=${reply%%$'\r'*}
[[ "$status" == "HTTP/1.1 200 "* ]] || { echo "login page: ${status:-no answer}"; exit 1; }
[[ "$reply" == *'id="rcmloginuser"'* ]] || { echo "login page without Roundcube's login form"; exit 1; }
echo ok
