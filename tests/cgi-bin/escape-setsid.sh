#!/bin/sh
# The escape from the issue, ( setsid sh -c 'setsid sleep 43 & exec sleep 42' & ):
# a double fork into a session of its own, and a second setsid below it.
# Each escaped process appends its pid to the file named by QUERY_STRING;
# the response is sent once both run, and with PATH_INFO /hold the script
# then stays, its request in progress, for 30 s. The escapees' output goes
# nowhere, so without /hold the response ends when this script exits.
out="${QUERY_STRING:-/dev/null}"
case "$ESCAPE_STAGE" in
    42) ESCAPE_STAGE=43 setsid "$0" & echo $$ >> "$out"; exec sleep 42 ;;
    43) echo $$ >> "$out"; exec sleep 43 ;;
esac
( ESCAPE_STAGE=42 setsid "$0" </dev/null >/dev/null 2>&1 & )
i=0
while [ "$(cat "$out" 2>/dev/null | wc -l)" -lt 2 ] && [ "$i" -lt 500 ]; do
    sleep 0.01
    i=$((i + 1))
done
printf 'Content-Type: text/plain\r\n\r\nescaped\n'
if [ "$PATH_INFO" = /hold ]; then
    exec sleep 30
fi
