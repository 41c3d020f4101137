"""Which requests may reach a script at all: method, Host and body size (no I/O).

Used by the worker before anything is mapped or spawned, so a refused
request starts no process. Apache's core makes the same checks before any
handler runs: TRACE is answered by the core (and refused with
``TraceEnable off``), a bad or missing ``Host`` is 400 (AH00550, AH00569),
and ``LimitRequestBody`` refuses a declared body that is too large with 413.
"""

from __future__ import annotations

import re

from gunicorn_cgid.errors import ClientError

ALLOW = "GET, HEAD, POST, PUT, DELETE, OPTIONS, PATCH"
MAX_CONTENT_LENGTH = 2**63 - 1

# RFC 9110 §7.2 / RFC 3986 §3.2.2: host [ ":" port ], where host is an
# IP-literal in brackets, or a reg-name of unreserved, pct-encoded and
# sub-delims characters (an IPv4 address is a reg-name too).
_HOST = re.compile(
    r"(?:\[[0-9A-Fa-f:.]+\]|\[v[0-9A-Fa-f]+\.[A-Za-z0-9\-._~!$&'()*+,;=:]+\]"
    r"|(?:[A-Za-z0-9\-._~!$&'()*+,;=]|%[0-9A-Fa-f]{2})*)"
    r"(?::[0-9]*)?\Z")
_DIGITS = re.compile(r"[0-9]+\Z")


class Refused(ClientError):
    """A request refused before any script runs."""


def check(method: str, protocol: str, host: str | None, content_length: str | None,
          limit: int, pass_trace: bool) -> None:
    """Raise ``Refused`` (with its status) for a request no script may see.

    ``limit`` is the largest request body in bytes (0: unlimited);
    ``content_length`` is the header as received, None when absent (chunked).
    """
    if method == "CONNECT" or (method == "TRACE" and not pass_trace):
        raise Refused("method %s not allowed for CGI scripts" % method, status=405,
                      headers=[("Allow", ALLOW)])
    if host is None:
        if protocol == "HTTP/1.1":
            raise Refused("client sent HTTP/1.1 request without hostname (see RFC 9112 section 3.2)",
                          status=400)
    elif not valid_host(host):
        raise Refused("client sent malformed Host header: %r" % host, status=400)
    check_length(content_length, limit)


def check_length(content_length: str | None, limit: int) -> None:
    """A declared body within ``limit`` bytes (0: any); 400 for a bad header, 413 past the limit."""
    if content_length is not None:
        length = parse_content_length(content_length)
        if limit and length > limit:
            raise Refused("request body of %d bytes exceeds the limit of %d (cgi_limit_request_body)"
                          % (length, limit), status=413)


def valid_host(value: str) -> bool:
    """Whether ``value`` is a syntactically valid ``Host`` header (host and optional port)."""
    return bool(value) and _HOST.match(value) is not None


def parse_content_length(value: str) -> int:
    """A plain decimal that fits in 64 bits, or ``Refused`` 400 (as Apache: AH01587, AH02438)."""
    text = value.strip(" \t")
    if not _DIGITS.match(text):
        raise Refused("invalid Content-Length %r" % value, status=400)
    length = int(text)
    if length > MAX_CONTENT_LENGTH:
        raise Refused("Content-Length %r does not fit in 64 bits" % value, status=400)
    return length
