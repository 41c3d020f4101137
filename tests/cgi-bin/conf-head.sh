#!/bin/sh
# Logs that it ran (with QUERY_STRING as a token), then answers with a body.
echo "conf-head ran $REQUEST_METHOD $QUERY_STRING" >&2
printf 'Content-Type: text/plain\r\nX-Conf-Head: %s\r\n\r\n' "$REQUEST_METHOD"
echo "a body that HEAD must not carry"
