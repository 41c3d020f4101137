#!/bin/sh
# Answers with X-Sendfile: the file named by QUERY_STRING (an absolute path, up to
# an optional "&typed", which adds the script's own Content-Type), a download name,
# its own status reason, and a body the server must replace with the file.
file=${QUERY_STRING%%&*}
printf 'Status: 200 File Follows\r\n'
case $QUERY_STRING in *'&typed') printf 'Content-Type: application/x-report\r\n' ;; esac
printf 'Content-Disposition: attachment; filename="report.csv"\r\nX-Sendfile: %s\r\n\r\n' "$file"
echo 'the script body, not the file'
