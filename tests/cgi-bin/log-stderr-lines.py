#!/usr/bin/env python3
# stderr: a 20000-byte line (split by the gateway), then a line with invalid UTF-8; then a valid response.
import os
os.write(2, b"L" * 20000 + b"\n")
os.write(2, b"bad \xff\xfe end\n")
os.write(1, b"Content-Type: text/plain\r\n\r\nok\n")
