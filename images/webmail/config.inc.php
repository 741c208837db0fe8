<?php
// mailstack's Roundcube (replaces the one Debian's postinst writes). It reaches the stack like any mail
// client would: IMAPS to Dovecot, submission with STARTTLS and SMTP AUTH as the user to Postfix,
// ManageSieve with STARTTLS (plugins/managesieve/config.inc.php); every connection verifies the stack's
// CA and its host name. Options left out keep Roundcube's defaults (/etc/roundcube/defaults.inc.php).
$config = [];

// $mailstack['des_key'] and ['hostname']: written by entrypoint.sh from the compose secret and
// MAILSTACK_HOSTNAME at every start, readable only by www-data's group.
require '/etc/roundcube/mailstack.inc.php';
$config['des_key'] = $mailstack['des_key'];  // encrypts the IMAP password kept in the session

// PHP's stream context for TLS: the certificate must chain to the stack's CA and name the stack's host
// (the containers are reached as dovecot/postfix, so the expected name is given, not taken from the URL).
$mailstack_tls = ['ssl' => [
    'verify_peer' => true,
    'verify_peer_name' => true,
    'peer_name' => $mailstack['hostname'],
    'allow_self_signed' => false,
    'cafile' => '/run/mailstack/tls/ca.crt',
]];

$config['imap_host'] = 'ssl://dovecot:993';
$config['imap_conn_options'] = $mailstack_tls;
$config['smtp_host'] = 'tls://postfix:587';  // tls:// is STARTTLS; Postfix offers AUTH only after it
$config['smtp_conn_options'] = $mailstack_tls;
$config['smtp_user'] = '%u';  // the login and its password: Postfix authenticates the user (Dovecot SASL)
$config['smtp_pass'] = '%p';
$config['smtp_helo_host'] = gethostname();  // webmail.<stack host> (compose's hostname), not the HTTP Host
$config['max_message_size'] = '49M';  // after base64: under Postfix's message_size_limit (50 MiB)

// Logins are full addresses, as Dovecot and Postfix expect them: no username_domain, lowercased.
$config['username_domain'] = '';
$config['login_lc'] = 2;
$config['login_autocomplete'] = 2;  // a local stack's test users: let the browser remember both
$config['session_lifetime'] = 60;  // minutes without a request (an open tab keeps the session alive)
$config['session_samesite'] = 'Lax';  // PHP's default sends the cookie without SameSite

// Roundcube's own data (users, settings, contacts, sessions): SQLite on the webmail's volume. Roundcube
// 1.6 creates the schema when it connects to an empty file; entrypoint.sh does that (and applies updates
// after a Roundcube upgrade) with bin/updatedb.sh before php-fpm starts.
$config['db_dsnw'] = 'sqlite:////var/lib/roundcube/db/roundcube.sqlite?mode=0640';

// Logs go to php-fpm's stdout capture (catch_workers_output): docker logs.
$config['log_driver'] = 'stdout';
$config['log_logins'] = true;

$config['product_name'] = 'mailstack';
$config['support_url'] = '';
$config['skin'] = 'elastic';
$config['plugins'] = ['managesieve', 'archive', 'zipdownload'];
$config['enable_installer'] = false;
$config['enable_spellcheck'] = false;  // its engines are external services or extra packages
$config['x_frame_options'] = 'sameorigin';  // Roundcube sends it on its pages (nginx adds CSP frame-ancestors)
$config['use_https'] = false;  // plain HTTP on the bind address (127.0.0.1 by default)
