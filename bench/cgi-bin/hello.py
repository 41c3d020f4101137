#!/usr/bin/python3
# The interpreter line is rewritten by run.py to the system's python3.
import sys

sys.stdout.write("Content-Type: text/plain\r\n\r\nhello\n")
