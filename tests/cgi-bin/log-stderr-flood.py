#!/usr/bin/env python3
# 256 KiB of stderr (256 lines of 1 KiB) before any stdout, more than a socket buffer holds.
import os
data = (b"e" * 1023 + b"\n") * 256
view = memoryview(data)
while view:
    view = view[os.write(2, view):]
os.write(1, b"Content-Type: text/plain\r\n\r\nflood done\n")
