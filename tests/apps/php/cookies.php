<?php
// Two cookies: two separate Set-Cookie header lines.
setcookie("first", "one");
setcookie("second", "two", array("path" => "/php/", "httponly" => true));
echo "cookies set\n";
