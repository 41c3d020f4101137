<?php
// Reports each uploaded file: client name, size, md5 of what PHP stored, error code.
header("Content-Type: application/json");
$files = array();
foreach ($_FILES as $field => $info) {
    $files[$field] = array(
        "name" => $info["name"],
        "size" => $info["size"],
        "error" => $info["error"],
        "md5" => $info["error"] === UPLOAD_ERR_OK ? md5_file($info["tmp_name"]) : null,
    );
}
echo json_encode(array("files" => $files, "post" => $_POST));
