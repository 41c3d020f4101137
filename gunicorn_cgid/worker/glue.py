"""Reaching gunicorn's request and response objects from a WSGI environ.

Runs in the worker. WSGI hides two things a CGI gateway needs: the request
headers as they arrived (gunicorn joins repeats with "," before the environ is
built) and control over the raw connection (NPH scripts, cutting a response
short). gunicorn's ``wsgi.early_hints`` callback closes over both objects; we
look for them there and fall back to plain WSGI when a gunicorn version
builds it differently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _closure_objects(environ: Mapping[str, Any]) -> tuple[Any, Any]:
    hints = environ.get("wsgi.early_hints")
    req = resp = None
    for cell in getattr(hints, "__closure__", None) or ():
        try:
            obj = cell.cell_contents
        except ValueError:
            continue
        if hasattr(obj, "headers_sent") and hasattr(obj, "must_close"):
            resp = obj
        elif hasattr(obj, "headers") and hasattr(obj, "method") and hasattr(obj, "uri"):
            req = obj
    return req, resp


def raw_headers(environ: Mapping[str, Any]) -> list[tuple[str, str]] | None:
    """The request headers in arrival order, repeats not joined; None if unavailable."""
    req, _ = _closure_objects(environ)
    headers = getattr(req, "headers", None)
    if isinstance(headers, list):
        return [(str(name), str(value)) for name, value in headers]
    return None


def gunicorn_response(environ: Mapping[str, Any]) -> Any:
    """gunicorn's Response object for this request, or None."""
    return _closure_objects(environ)[1]


def cut_response(environ: Mapping[str, Any]) -> bool:
    """Make gunicorn end the connection without completing the body.

    A truncated chunked body must not get its final zero chunk, or the
    client would take a cut response for a whole one. False if we cannot.
    """
    resp = gunicorn_response(environ)
    if resp is None:
        return False
    resp.chunked = False
    resp.must_close = True
    return True


def take_over_connection(environ: Mapping[str, Any], status: str) -> Any:
    """For NPH: gunicorn will write nothing more and close the connection; returns the socket.

    None when gunicorn's response object cannot be reached.
    """
    resp = gunicorn_response(environ)
    sock = environ.get("gunicorn.socket")
    if resp is None or sock is None:
        return None
    resp.status = status
    try:
        resp.status_code = int(status.split()[0])
    except (ValueError, IndexError, AttributeError):
        pass
    resp.headers_sent = True
    resp.chunked = False
    resp.must_close = True
    return sock
