#!/bin/sh
# Validators and statuses for conditional requests, chosen by QUERY_STRING.
LM='Last-Modified: Sat, 01 Jan 2000 00:00:00 GMT'
case "$QUERY_STRING" in
  status304) printf 'Status: 304\r\nContent-Type: text/plain\r\n\r\nnever sent\n' ;;
  status200-lm) printf 'Status: 200\r\n%s\r\nContent-Type: text/plain\r\n\r\nbody\n' "$LM" ;;
  lm) printf '%s\r\nContent-Type: text/plain\r\n\r\nbody\n' "$LM" ;;
  etag) printf 'ETag: "conf-v1"\r\nContent-Type: text/plain\r\n\r\nbody\n' ;;
  *) printf 'Content-Type: text/plain\r\n\r\nbody\n' ;;
esac
