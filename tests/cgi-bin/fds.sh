#!/bin/sh
# Lists the descriptors the script was started with: exec'd ls sees what the
# shell inherited (the shell's own descriptors are close-on-exec), plus the
# one it opens to read the directory.
printf 'Content-Type: text/plain\r\n\r\n'
exec ls /proc/self/fd
