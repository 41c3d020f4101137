#!/usr/bin/env python3
# Streams N MiB (QUERY_STRING, default 17) of a repeating pattern.
import os
mib = int(os.environ.get("QUERY_STRING") or 17)
os.write(1, b"Content-Type: application/octet-stream\r\n\r\n")
block = bytes(range(256)) * 4096
for _ in range(mib):
    view = memoryview(block)
    while view:
        view = view[os.write(1, view):]
