#!/usr/bin/env python3
# Echoes stdin to stdout as it arrives; reads to EOF.
import os
os.write(1, b"Content-Type: application/octet-stream\r\n\r\n")
while True:
    chunk = os.read(0, 65536)
    if not chunk:
        break
    while chunk:
        chunk = chunk[os.write(1, chunk):]
