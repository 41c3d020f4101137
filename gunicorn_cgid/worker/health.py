"""The health endpoint: 200 only when a round trip to the CGI daemon succeeds now.

Runs in the worker. One PING frame on a fresh ScriptSock connection, one PONG
back, within a second: cheap enough for a probe every second, and it proves
what a request needs (the socket, the supervisor's listener, a daemon that
reads and answers), not just an open port.
"""

from __future__ import annotations

import select
import socket
import time

from gunicorn_cgid import wire

ANSWER_SECONDS = 1.0


def probe(sock_path: str, timeout: float = ANSWER_SECONDS) -> tuple[bool, str]:
    """(True, "daemon <pid> answered") or (False, why not)."""
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(sock_path)
            sock.sendall(wire.frame(wire.PING))
        except OSError as exc:
            return False, "cannot reach the CGI daemon at %s: %s" % (sock_path, exc.strerror or exc)
        decoder = wire.reply_decoder()
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(int(remaining * 1000) + 1):
                return False, "the CGI daemon did not answer within %.1f s" % timeout
            try:
                data = sock.recv(4096)
                frames = decoder.feed(data) if data else None
            except (OSError, wire.WireError) as exc:
                return False, "bad answer from the CGI daemon: %s" % exc
            if frames is None:
                return False, "the CGI daemon closed the connection without answering"
            for fr in frames:
                if fr.kind == wire.PONG:
                    return True, "CGI daemon %d answered" % wire.decode_pong(fr.payload)
                if fr.kind == wire.FAILED:
                    return False, "the CGI daemon refused: %s" % wire.decode_failed(fr.payload).message
    finally:
        sock.close()
