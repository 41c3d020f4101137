"""Failures answered in one place: cut responses look cut, a client that leaves is one info line.

Raw sockets against real gunicorn servers (gthread, gevent, sync).
"""

from __future__ import annotations

import socket
import struct

import pytest

from .conftest import WORKERS, script_pids, wait_until

pytestmark = pytest.mark.timeout(90)


def raw_get(srv, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: test\r\n\r\n" % path.encode())
    return sock


def read_to_eof(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


def assert_no_traceback(srv) -> None:
    log = srv.log()
    assert "Traceback" not in log and "Error handling request" not in log, log


@pytest.mark.parametrize("worker", WORKERS)
@pytest.mark.parametrize("how, settings, path, line", [
    ("idle timeout", {"cgi_timeout": 1}, "/cgi-bin/partial-sleep.sh", "AH01220: Timeout waiting for output"),
    ("max runtime", {"cgi_max_runtime": 1}, "/cgi-bin/life-drip.sh?60", "killed before it finished its output"),
])
def test_a_cut_chunked_response_has_no_final_chunk(serve, worker, how, settings, path, line):
    srv = serve(worker, **settings)
    with raw_get(srv, path) as sock:
        answer = read_to_eof(sock)  # the server closes the connection
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"transfer-encoding: chunked" in head.lower(), head
    assert body and not body.endswith(b"0\r\n\r\n"), body[-40:]
    wait_until(lambda: line in srv.log(), what="the %s line" % how)
    assert_no_traceback(srv)


@pytest.mark.parametrize("worker", WORKERS)
def test_client_gone_before_the_headers_is_one_info_line(serve, worker):
    srv = serve(worker)
    sock = raw_get(srv, "/cgi-bin/sleep.sh?30")
    wait_until(lambda: len(script_pids(srv)) >= 2, what="the script and its child to run")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()
    wait_until(lambda: not script_pids(srv), what="the script tree to be killed")
    wait_until(lambda: "[INFO]" in srv.log() and "reset the connection" in srv.log(),
               what="the client-gone line")
    gone = [ln for ln in srv.log().splitlines() if "reset the connection" in ln]
    assert len(gone) == 1 and "sleep.sh" in gone[0] and "before the response headers" in gone[0], gone
    assert_no_traceback(srv)
    wait_until(lambda: srv.accesslog.exists() and '" 499 ' in srv.accesslog.read_text(),
               what="the 499 in the access log")
