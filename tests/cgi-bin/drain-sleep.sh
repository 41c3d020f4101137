#!/bin/sh
# Reads its whole request body, then stays silent for QUERY_STRING seconds.
cat > /dev/null
exec sleep "${QUERY_STRING:-30}"
