<?php
// mailstack's Roundcube. It reaches the stack like any mail client: IMAPS to Dovecot, submission with
// STARTTLS to Postfix, ManageSieve with STARTTLS (managesieve.inc.php), each verifying the stack's CA and
// its host name. The entrypoint writes the per-stack values (des_key, host name) into mailstack.inc.php.
$config = [];
require '/etc/roundcube/mailstack.inc.php';

$mailstack_tls = ['ssl' => [
    'verify_peer' => true,
    'verify_peer_name' => true,
    'allow_self_signed' => false,
    'peer_name' => $mailstack_hostname,
    'cafile' => '/run/mailstack/tls/ca.crt',
]];

$config['imap_host'] = 'ssl://dovecot:993';
$config['imap_conn_options'] = $mailstack_tls;
$config['smtp_host'] = 'tls://postfix:587';
$config['smtp_conn_options'] = $mailstack_tls;
$config['smtp_user'] = '%u';  // the login (a full address) and its password: SMTP AUTH as the user
$config['smtp_pass'] = '%p';
$config['smtp_helo_host'] = gethostname();

// Roundcube's own data (settings, contacts, sessions): SQLite on the webmail's volume; Roundcube creates
// the schema on first connect, the entrypoint applies updates for a newer Roundcube.
$config['db_dsnw'] = 'sqlite:////var/lib/mailstack-webmail/roundcube.sqlite?mode=0640';

$config['log_driver'] = 'stdout';
$config['log_logins'] = true;  // successful and failed logins, with the client's address
$config['product_name'] = 'mailstack webmail';
$config['support_url'] = '';
$config['skin'] = 'elastic';
$config['plugins'] = ['managesieve', 'archive', 'zipdownload'];
$config['enable_installer'] = false;
$config['enable_spellcheck'] = false;  // its default service is on the internet
$config['username_domain'] = '';  // logins are full addresses
$config['login_lc'] = 2;
$config['login_autocomplete'] = 2;
$config['session_lifetime'] = 60;  // minutes
$config['x_frame_options'] = 'sameorigin';
$config['use_https'] = false;  // served on 127.0.0.1 (MAILSTACK_BIND_ADDRESS) over plain HTTP
$config['mail_domain'] = '%d';
$config['draft_autosave'] = 60;
