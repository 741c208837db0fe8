<?php
// Outlook's POX autodiscover (MS-OXDSCLI): the answer the orchestrator rendered from the stack's ports, with
// the address the request asks about as the login name. GET (some clients probe with it) gets it too.
$answer = @file_get_contents('/run/mailstack/webmail/autodiscover.xml');
if ($answer === false) {
    http_response_code(503);
    exit;
}
$address = '';
$request = file_get_contents('php://input');
if ($request !== false && $request !== '') {
    $document = new DOMDocument();
    if (@$document->loadXML($request, LIBXML_NONET)) {
        $found = $document->getElementsByTagName('EMailAddress')->item(0);
        $candidate = $found ? trim($found->textContent) : '';
        if (filter_var($candidate, FILTER_VALIDATE_EMAIL)) {
            $address = $candidate;
        }
    }
}
header('Content-Type: application/xml; charset=utf-8');
header('Cache-Control: no-store');
echo str_replace('%EMAILADDRESS%', htmlspecialchars($address, ENT_XML1 | ENT_QUOTES, 'UTF-8'), $answer);
