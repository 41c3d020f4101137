#!/bin/sh
# Silent for QUERY_STRING seconds (default 30), with a grandchild of its own.
sleep "${QUERY_STRING:-30}" &
sleep "${QUERY_STRING:-30}"
printf 'Content-Type: text/plain\r\n\r\nwoke\n'
