#!/bin/sh
# A valid header line, then a bad one.
printf 'X-Before: 1\r\n'
echo "this is not a header"
