<?php
// Filters and vacation replies through Dovecot's ManageSieve, STARTTLS verified like IMAP and SMTP.
$config = [];
require '/etc/roundcube/mailstack.inc.php';
$config['managesieve_host'] = 'tls://dovecot:4190';
$config['managesieve_conn_options'] = ['ssl' => [
    'verify_peer' => true,
    'verify_peer_name' => true,
    'allow_self_signed' => false,
    'peer_name' => $mailstack_hostname,
    'cafile' => '/run/mailstack/tls/ca.crt',
]];
$config['managesieve_vacation'] = 1;  // the vacation form beside the filters
$config['managesieve_raw_editor'] = true;
