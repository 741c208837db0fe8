#!/bin/bash
# Healthy when Roundcube's login page comes back through nginx and php-fpm (its session in SQLite
# included): HTTP 200 with the login form. No curl in the image: bash's /dev/tcp.
set -euo pipefail
exec 3<> /dev/tcp/127.0.0.1/80
printf 'GET /?_task=login HTTP/1.0\r\nHost: localhost\r\nUser-Agent: mailstack-healthcheck\r\n\r\n' >&3
reply=$(timeout 4 cat <&3 || true)
exec 3>&-
status=${reply%%$'\r'*}
[[ "$status" == "HTTP/1.1 200"* ]] || { echo "login page: ${status:-no answer}"; exit 1; }
[[ "$reply" == *rcmloginuser* ]] || { echo "login page without Roundcube's login form"; exit 1; }
echo ok
