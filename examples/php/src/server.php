<?php
declare(strict_types=1);

// Some CGI variables of this request. Only the names below are shown, each
// value escaped: never cookies, Authorization or the whole environment
// (phpinfo() or print_r($_SERVER) would show them to anyone).
$names = [
    'GATEWAY_INTERFACE', 'SERVER_SOFTWARE', 'SERVER_PROTOCOL', 'SERVER_NAME', 'SERVER_PORT',
    'REQUEST_METHOD', 'REQUEST_SCHEME', 'REQUEST_URI', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING',
    'REMOTE_ADDR', 'HTTPS', 'HTTP_HOST', 'HTTP_USER_AGENT', 'HTTP_ACCEPT_LANGUAGE',
];
$rows = '';
foreach ($names as $name) {
    $value = $_SERVER[$name] ?? null;
    $shown = $value === null ? '<em>unset</em>' : '<code>' . h((string)$value) . '</code>';
    $rows .= '<tr><th>' . h($name) . '</th><td>' . $shown . '</td></tr>';
}
$rows .= '<tr><th>PHP</th><td><code>' . h(PHP_VERSION . ' (' . PHP_SAPI . ')') . '</code></td></tr>';

page('Server variables', '<table class="vars">' . $rows . '</table>');
