#!/bin/sh
# Prints its environment, argv and working directory as NUL-terminated NAME=value entries.
printf 'Content-Type: application/octet-stream\r\nX-Conf-Method: %s\r\n\r\n' "$REQUEST_METHOD"
env -0
printf 'ARGC=%d\0' "$#"
i=0
for a in "$@"; do i=$((i+1)); printf 'ARGV%d=%s\0' "$i" "$a"; done
printf 'CWD=%s\0' "$(pwd)"
