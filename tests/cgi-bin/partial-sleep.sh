#!/bin/sh
# Headers and part of a body, then silence for QUERY_STRING seconds (default 30).
printf 'Content-Type: text/plain\r\n\r\npartial\n'
exec sleep "${QUERY_STRING:-30}"
