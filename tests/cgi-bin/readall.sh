#!/bin/sh
# Reads the whole request body, then answers with its size.
n=$(wc -c)
printf 'Content-Type: text/plain\r\n\r\n%s\n' "$n"
