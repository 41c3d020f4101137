"""What to answer, decided from the script's header block (no I/O).

Runs in the worker, between reading the script's head and relaying its body:
an internal redirect, Apache's 302 for a non-local ``Location``, a 304/412
from the script's validators, or the script's own status; and the error pages
the gateway writes itself.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from gunicorn_cgid import conditional
from gunicorn_cgid.headers import Head

STREAM = "stream"    # relay the script's body
DISCARD = "discard"  # read it and drop it (HEAD, 304, 1xx, 204)
REPLACE = "replace"  # drop it and send ``body`` instead (Apache's 302 page)
SENDFILE = "sendfile"  # drop it and send the file the script named in X-Sendfile


@dataclass(frozen=True)
class Redirect:
    """A local ``Location: /path`` with no other status: Apache's internal redirect."""
    location: str


@dataclass(frozen=True)
class Reply:
    status: str                       # "200 OK"
    headers: list[tuple[str, str]]
    mode: str                         # STREAM, DISCARD or REPLACE
    body: bytes = b""


def decide(head: Head, method: str, environ: dict[str, Any], now: float,
           sendfile: bool = False) -> Reply | Redirect:
    """The response for a script's head, as Apache's mod_cgi would make it.

    With ``sendfile`` (the location allows X-Sendfile), a script's
    ``X-Sendfile: /path`` makes the server send that file itself (lighttpd's
    name; nginx's X-Accel-Redirect); the path is in ``body``, to be checked
    against the allowed directories by the caller.
    """
    if head.location and head.location.startswith("/") and head.status == 200:
        return Redirect(head.location)
    status, reason, headers = head.status, head.reason, list(head.headers)
    mode, body = STREAM, b""
    target = _header(headers, "x-sendfile")
    if target is not None:
        headers = [(k, v) for k, v in headers if k.lower() != "x-sendfile"]
        if sendfile and status == 200:
            return Reply("%d %s" % (status, reason), headers, SENDFILE, target.encode("latin-1"))
    if head.location and head.status == 200:
        # Apache turns a non-local Location into a redirect with its own body.
        status, reason, mode = 302, "Found", REPLACE
        href = html.escape(head.location, quote=True)
        body = ('<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
                '<title>302 Found</title>\n</head><body>\n<h1>Found</h1>\n'
                '<p>The document has moved <a href="%s">here</a>.</p>\n</body></html>\n' % href).encode()
        headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
        headers.append(("Content-Type", "text/html; charset=iso-8859-1"))
    elif not head.explicit_status and method in ("GET", "HEAD"):
        etag = _header(headers, "etag")
        modified = _header(headers, "last-modified")
        if etag or modified:
            verdict = conditional.evaluate(method, environ, etag, modified, now)
            if verdict is not None:
                status, reason, mode = verdict, HTTPStatus(verdict).phrase, DISCARD
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        mode = DISCARD
    return Reply("%d %s" % (status, reason), headers, mode, body)


def error_page(status: int, extra: list[tuple[str, str]] | None = None) -> Reply:
    """The gateway's own answer for a failure, in Apache's words and shape."""
    phrase = _phrase(status)
    body = ('<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>%d %s</title>\n'
            '</head><body>\n<h1>%s</h1>\n</body></html>\n' % (status, phrase, phrase)).encode()
    headers = [("Content-Type", "text/html; charset=iso-8859-1"), ("Content-Length", str(len(body)))]
    return Reply("%d %s" % (status, phrase), headers + list(extra or ()), REPLACE, body)


def _phrase(status: int) -> str:
    if status == 499:
        return "Client Closed Request"
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None
