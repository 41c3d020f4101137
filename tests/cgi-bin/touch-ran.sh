#!/bin/sh
# Leaves a file behind, so a test can tell that a script ran at all; reads its body.
cat > /dev/null
: > "$CGID_TEST_MARKER/ran"
printf 'Content-Type: text/plain\r\n\r\nran\n'
