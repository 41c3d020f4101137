<?php
// Reports the request as PHP sees it: CGI variables, $_GET and $_POST.
header("Content-Type: application/json");
$server = array();
foreach (array("SCRIPT_FILENAME", "SCRIPT_NAME", "PATH_INFO", "REQUEST_URI", "QUERY_STRING",
               "REQUEST_METHOD", "CONTENT_TYPE", "CONTENT_LENGTH", "PHP_SELF", "REDIRECT_STATUS",
               "GATEWAY_INTERFACE", "SERVER_PORT") as $name) {
    $server[$name] = isset($_SERVER[$name]) ? $_SERVER[$name] : null;
}
echo json_encode(array("server" => $server, "get" => $_GET, "post" => $_POST));
