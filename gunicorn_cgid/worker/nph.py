"""``nph-`` scripts: their output goes to the client untouched, then the connection closes.

Runs in the worker, over HTTP/1.x only: the script writes its own status
line and headers, which gunicorn is told it has sent (``glue``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

from gunicorn_cgid import wire
from gunicorn_cgid.errors import CGIError, ScriptHeaderError
from gunicorn_cgid.worker import glue
from gunicorn_cgid.worker.script import ScriptRun

log = logging.getLogger("gunicorn.error")

STATUS_LINE_MAX = 8192


def status_of(first: bytes) -> str:
    """The status of an NPH script's first line (``HTTP/1.1 404 Not Found``), 200 when there is none."""
    line = first.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    parts = line.split(None, 1)
    if len(parts) == 2 and parts[0].startswith("HTTP/") and parts[1][:3].isdigit():
        return parts[1]
    return "200 OK"


def take_over(environ: dict, first: bytes, filename: str) -> socket.socket:
    """Tell gunicorn the response is ours to write; raises when it cannot be."""
    sock = glue.take_over_connection(environ, status_of(first))
    if sock is None:
        raise ScriptHeaderError("cannot pass NPH output through this server: %s" % filename)
    return sock


def pump(run: ScriptRun, sock: socket.socket, first: bytes) -> Iterator[bytes]:
    """Copy the script's output to the client's socket as it comes."""
    sent = 0
    try:
        chunk = first
        while chunk:
            # Raw means raw: a HEAD gets what the script wrote, as in Apache.
            sock.sendall(chunk)
            sent += len(chunk)
            chunk = run.read()
        run.end(wire.REASON_NONE)
    except (CGIError, OSError) as exc:
        log.info("NPH script %s ended early after %d bytes: %s", run.filename, sent, exc)
    finally:
        resp = glue.gunicorn_response(run.req.environ)
        if resp is not None:
            resp.sent = sent
    return
    yield b""  # a generator, so that the WSGI server drives it
