<?php
// Roundcube's managesieve plugin (replaces Debian's empty file): filters and vacation replies through
// Dovecot's ManageSieve on 4190, STARTTLS verified exactly like IMAP and SMTP (config.inc.php). A
// plugin's file is read after the main config and overrides it, so its settings live here.
$config = [];
require '/etc/roundcube/mailstack.inc.php';  // $mailstack['hostname'] (entrypoint.sh)

$config['managesieve_host'] = 'tls://dovecot:4190';
$config['managesieve_conn_options'] = ['ssl' => [
    'verify_peer' => true,
    'verify_peer_name' => true,
    'peer_name' => $mailstack['hostname'],
    'allow_self_signed' => false,
    'cafile' => '/run/mailstack/tls/ca.crt',
]];
$config['managesieve_vacation'] = 1;  // the vacation form beside the filters
