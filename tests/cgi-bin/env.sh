#!/bin/sh
# Prints its environment (one NAME=value a line) and argv, with its pid in a header.
printf 'Content-Type: text/plain\r\nX-CGI-Pid: %s\r\n\r\n' "$$"
env
i=0
for a in "$@"; do i=$((i+1)); echo "ARGV$i=$a"; done
echo "CWD=$(pwd)"
