#!/usr/bin/env python3
"""Echoes the request body back, streaming, with its length in a header-free trailer line."""
import os
import sys

sys.stdout.buffer.write(b"Content-Type: application/octet-stream\r\n\r\n")
sys.stdout.buffer.flush()
while True:
    chunk = sys.stdin.buffer.read1(65536) if hasattr(sys.stdin.buffer, "read1") else os.read(0, 65536)
    if not chunk:
        break
    sys.stdout.buffer.write(chunk)
sys.stdout.buffer.flush()
