#!/bin/sh
echo "a line on stderr" >&2
printf 'Content-Type: text/plain\r\n\r\nok\n'
