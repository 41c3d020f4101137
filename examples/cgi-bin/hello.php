<?php
// Served through php-cgi when it is installed (see cgi_interpreters in gunicorn.conf.py).
header("Content-Type: text/plain");
echo "Hello from PHP " . PHP_VERSION . " via " . $_SERVER["SERVER_SOFTWARE"] . "\n";
