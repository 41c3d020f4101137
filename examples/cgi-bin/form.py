#!/usr/bin/env python3
"""A small form: GET shows it, POST greets the name that was sent."""
import html
import os
import sys
from urllib.parse import parse_qs

print("Content-Type: text/html; charset=utf-8")
print()
name = ""
if os.environ.get("REQUEST_METHOD") == "POST":
    length = int(os.environ.get("CONTENT_LENGTH") or 0)
    fields = parse_qs(sys.stdin.read(length))
    name = fields.get("name", [""])[0]
print("<!doctype html><title>gunicorn-cgid</title>")
if name:
    print("<p>Hello, %s!</p>" % html.escape(name))
print('<form method="post"><input name="name"><button>Send</button></form>')
