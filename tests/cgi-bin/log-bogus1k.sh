#!/bin/sh
# No header block: one line of 1 KiB (Apache's bogus1k.pl), so each request adds over 1 KiB to ScriptLog.
line=x
for _ in 1 2 3 4 5 6 7 8 9 10; do line="$line$line"; done
echo "$line"
