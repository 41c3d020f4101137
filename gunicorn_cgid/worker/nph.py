"""``nph-`` scripts: their output goes to the client untouched, then the connection closes.

Runs in the worker. Over HTTP/1.x the script writes its own status line and
headers: the bytes go straight to the client's socket (``gunicorn.socket``),
gunicorn writes nothing of its own, and the response ends with a
``ResponseCut``, which makes gunicorn close the connection without another
byte (Apache turns keep-alive off after NPH too). Over HTTP/2 no raw bytes
may touch the shared connection: the status line and headers are parsed and
relayed as an ordinary response (``status_line`` and the ``ScriptRun``).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator

from gunicorn_cgid import wire
from gunicorn_cgid.errors import CGIError, ResponseCut
from gunicorn_cgid.headers import split_status_line
from gunicorn_cgid.worker.script import ScriptRun
from gunicorn_cgid.worker.stream import paced

log = logging.getLogger("gunicorn.error")

STATUS_LINE_MAX = 8192


def status_of(first: bytes) -> str:
    """The status an NPH script's output starts with, for the access log; 200 when there is none."""
    status, _ = split_status_line(first)
    return status or "200 OK"


def pump(run: ScriptRun, sock: socket.socket, first: bytes, timeout: float) -> Iterator[bytes]:
    """Copy the script's output to the client's socket as it comes, then close the connection."""
    sent = 0
    try:
        chunk = first
        while chunk:
            # Raw means raw: a HEAD gets what the script wrote, as in Apache.
            for piece in paced(sock, chunk, timeout):
                sock.sendall(piece)
                sent += len(piece)
            chunk = run.read()
        run.end(wire.REASON_NONE)
    except (CGIError, OSError) as exc:
        log.info("NPH script %s ended early after %d bytes: %s", run.filename, sent, exc)
    raise ResponseCut("NPH output of %s sent (%d bytes): closing the connection" % (run.filename, sent))
    yield b""  # a generator, so that the WSGI server drives it
