<?php
// A CGI Status header without a Location.
header("Status: 404 Not Found");
echo "no such thing\n";
