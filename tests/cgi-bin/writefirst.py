#!/usr/bin/env python3
# Writes 1 MiB before reading its input, then reports how many bytes it read.
import hashlib
import os
os.write(1, b"Content-Type: text/plain\r\n\r\n")
junk = b"x" * (1024 * 1024)
view = memoryview(junk)
while view:
    view = view[os.write(1, view):]
h = hashlib.sha256()
n = 0
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    n += len(chunk)
    h.update(chunk)
os.write(1, ("\nread=%d sha256=%s\n" % (n, h.hexdigest())).encode())
