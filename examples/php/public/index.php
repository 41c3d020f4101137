<?php
// Front controller. gunicorn-cgid runs this one file for every URL of the
// application (script_alias maps "/" to it) and passes the rest of the URL as
// PATH_INFO, as Apache's FallbackResource or a rewrite to index.php would.
// The pages live in ../src, where no URL reaches them directly.
declare(strict_types=1);

require __DIR__ . '/../src/layout.php';

$routes = [
    '/' => 'home.php',
    '/form' => 'form.php',
    '/server' => 'server.php',
];

$path = $_SERVER['PATH_INFO'] ?? '';
if ($path === '') {
    $path = '/';
}
if (!isset($routes[$path])) {
    http_response_code(404);
    page('Not found', '<p>There is no page at <code>' . h($path) . '</code>.</p>');
    exit;
}
require __DIR__ . '/../src/' . $routes[$path];
