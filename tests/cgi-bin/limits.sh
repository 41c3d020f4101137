#!/bin/sh
# Prints the resource limits it runs under.
printf 'Content-Type: text/plain\r\n\r\n'
exec cat /proc/self/limits
