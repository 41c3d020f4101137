#!/bin/sh
# Headers, then output without end.
printf 'Content-Type: text/plain\r\n\r\n'
exec yes "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
