#!/bin/sh
# Ignores SIGTERM (and so does its grandchild, which inherits the ignored
# disposition); silent for QUERY_STRING seconds (default 60).
trap '' TERM
sleep "${QUERY_STRING:-60}" &
sleep "${QUERY_STRING:-60}"
printf 'Content-Type: text/plain\r\n\r\nsurvived\n'
