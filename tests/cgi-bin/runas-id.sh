#!/bin/sh
# Prints the ids it runs as (test_run_as).
printf 'Content-Type: text/plain\r\n\r\n'
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)"
