"""Remote clients cannot hold a worker: every wait on a client or a script has a deadline.

Each test reproduces a hold (a stalled upload, a client that never reads, a
script printing headers forever) against a real server and shows that it
ends, that its script is killed, and that a normal request is served meanwhile.
"""

from __future__ import annotations

import socket

import pytest

from .conftest import WORKERS, script_pids, wait_until

pytestmark = pytest.mark.timeout(90)


def connect(srv) -> socket.socket:
    return socket.create_connection(("127.0.0.1", srv.port), timeout=30)


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def assert_serving(srv) -> None:
    status, _, body = srv.get("/cgi-bin/life-ok.sh", timeout=10)
    assert (status, body) == (200, b"ok\n")


@pytest.mark.parametrize("worker", WORKERS)
@pytest.mark.parametrize("declared, sent", [(2 * 1024**3, 200_000), (1000, 10)], ids=["streamed", "inline"])
def test_a_stalled_upload_is_answered_408_and_its_script_killed(serve, worker, declared, sent):
    srv = serve(worker, cgi_timeout=2, cgi_limit_request_body=0)  # 2 GiB declared: no body limit here
    with connect(srv) as sock:
        sock.sendall(b"POST /cgi-bin/readall.sh HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % declared)
        sock.sendall(b"x" * sent)
        wait_until(lambda: script_pids(srv), what="the script to start")
        assert_serving(srv)  # the stalled upload holds nobody else
        answer = read_answer(sock)  # no more bytes from us: the server must give up
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    wait_until(lambda: not script_pids(srv), what="the script to be killed")
    assert "sent no request body" in srv.log()
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize("worker", WORKERS)
def test_a_client_that_never_reads_is_dropped(serve, worker):
    srv = serve(worker, cgi_timeout=2)
    socks = []
    try:
        for _ in range(4):
            sock = connect(srv)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"GET /cgi-bin/output-forever.sh HTTP/1.1\r\nHost: t\r\n\r\n")
            socks.append(sock)
        wait_until(lambda: len(script_pids(srv)) >= 4, what="four scripts writing")
        assert_serving(srv)
        wait_until(lambda: srv.log().count("read nothing of the response") >= 4, 30,
                   what="the four stalled clients to be dropped")
        wait_until(lambda: not script_pids(srv), what="their scripts to be killed")
        assert_serving(srv)
    finally:
        for sock in socks:
            sock.close()
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_headers_forever_with_script_log_ends(serve, worker):
    srv = serve(worker, script_log="logs/cgi.log", cgi_timeout=5)
    status, _, _ = srv.get("/cgi-bin/headers-forever.sh", timeout=30)
    assert status == 500
    wait_until(lambda: not script_pids(srv), what="the script to be killed")
    assert "Script header block too long" in srv.log()
    assert (srv.root / "logs" / "cgi.log").stat().st_size <= 2 * 1024 * 1024
