<?php
declare(strict_types=1);

/** Text for HTML: every value that comes from a request goes through this. */
function h(string $text): string
{
    return htmlspecialchars($text, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

/** A URL of this application, wherever it is mounted (SCRIPT_NAME is the mount point). */
function url(string $path): string
{
    return h(rtrim($_SERVER['SCRIPT_NAME'] ?? '', '/') . $path);
}

/** The whole page around $body (already HTML). */
function page(string $title, string $body): void
{
    header('Content-Type: text/html; charset=UTF-8');
    header('X-Content-Type-Options: nosniff');
    echo '<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>', h($title), '</title>
<link rel="stylesheet" href="/static/style.css">
</head>
<body>
<nav><a href="', url('/'), '">Home</a> <a href="', url('/form'), '">Guest book form</a> <a href="', url('/server'), '">Server variables</a></nav>
<main>
<h1>', h($title), '</h1>
', $body, '
</main>
</body>
</html>
';
}
