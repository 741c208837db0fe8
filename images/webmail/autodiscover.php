<?php
// Outlook's POX autodiscover (MS-OXDSCLI), behind POST /autodiscover/autodiscover.xml (nginx.conf): the
// document the orchestrator renders into /run/mailstack/webmail/autodiscover.xml, with every
// %EMAILADDRESS% in it replaced by the address the request asks about (its <EMailAddress>), or by
// nothing when it names none (a GET probe). No XML parser touches the request: one element is read.
declare(strict_types=1);

$method = $_SERVER['REQUEST_METHOD'] ?? 'GET';
if ($method !== 'POST' && $method !== 'GET' && $method !== 'HEAD') {
    header('Allow: GET, HEAD, POST');
    http_response_code(405);
    exit;
}
$document = @file_get_contents('/run/mailstack/webmail/autodiscover.xml');
if ($document === false) {
    http_response_code(404);  // a stack without its rendered documents
    exit;
}
$address = '';
if ($method === 'POST') {
    $request = (string) file_get_contents('php://input', false, null, 0, 16384);
    if (preg_match('#<(?:[\w.-]+:)?EMailAddress\b[^>]*>\s*([^<\s]+)\s*</#i', $request, $found)
        && filter_var($found[1], FILTER_VALIDATE_EMAIL) !== false) {
        $address = $found[1];
    }
}
header('Content-Type: text/xml; charset=utf-8');
header('Cache-Control: no-store');  // it names the address asked about
echo str_replace('%EMAILADDRESS%', htmlspecialchars($address, ENT_XML1 | ENT_QUOTES, 'UTF-8'), $document);
