#!/bin/sh
# Prints the signal mask and ignored set the script was started with (exec
# keeps both; dash blocks signals while it waits for a child).
printf 'Content-Type: text/plain\r\n\r\n'
exec grep -E '^Sig(Ign|Blk)' /proc/self/status
