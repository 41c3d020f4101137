"""Bad requests get Apache's answers, and a script never takes a broken body for a whole one.

Raw sockets, as a hostile or clumsy client would send them, under gthread and gevent.
"""

from __future__ import annotations

import socket

import pytest

from .conftest import wait_until

pytestmark = pytest.mark.timeout(60)
WORKERS = ["gthread", "gevent"]


def exchange(srv, raw: bytes, half_close: bool = False) -> bytes:
    """Send ``raw`` and read until the server closes or a whole response with a length arrived."""
    with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as sock:
        sock.sendall(raw)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    return data


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer[9:12])


def ran(srv) -> bool:
    return (srv.root / "ran").exists()


def post_chunked(body: bytes) -> bytes:
    return (b"POST /cgi-bin/touch-ran.sh HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + body)


@pytest.mark.parametrize("worker", WORKERS)
@pytest.mark.parametrize("body", [
    b"zz\r\nabc\r\n0\r\n\r\n",
    b"-5\r\nabcde\r\n0\r\n\r\n",
    b"3\r\nabcde\r\n0\r\n\r\n",
], ids=["letters", "negative", "longer-than-its-size"])
def test_a_malformed_chunked_body_is_400_and_the_script_never_answers(serve, worker, body):
    srv = serve(worker)
    answer = exchange(srv, post_chunked(body))
    assert status_of(answer) == 400, answer[:300]
    assert not ran(srv)
    wait_until(lambda: "malformed request body" in srv.log(), what="the log line")
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize("worker", WORKERS)
def test_a_body_cut_short_is_400(serve, worker):
    srv = serve(worker)
    answer = exchange(srv, b"POST /cgi-bin/touch-ran.sh HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc",
                      half_close=True)
    assert status_of(answer) == 400, answer[:300]
    assert not ran(srv)


@pytest.mark.parametrize("worker", WORKERS)
@pytest.mark.parametrize("length, status", [("4294967296", 413), ("99999999999999999999999", 400)])
def test_a_declared_body_too_large_starts_no_script(serve, worker, length, status):
    srv = serve(worker)
    answer = exchange(srv, b"POST /cgi-bin/touch-ran.sh HTTP/1.1\r\nHost: t\r\nContent-Length: %s\r\n\r\n"
                      % length.encode())
    assert status_of(answer) == status, answer[:300]
    assert not ran(srv)
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize("worker", WORKERS)
def test_a_chunked_body_past_the_limit_is_stopped(serve, worker):
    srv = serve(worker, cgi_limit_request_body=1000)
    chunks = b"".join(b"%x\r\n%s\r\n" % (500, b"x" * 500) for _ in range(10)) + b"0\r\n\r\n"
    answer = exchange(srv, post_chunked(chunks))
    assert status_of(answer) == 413, answer[:300]
    assert not ran(srv)
    # Under the limit the same request runs.
    answer = exchange(srv, post_chunked(b"1f4\r\n" + b"x" * 500 + b"\r\n0\r\n\r\n"))
    assert status_of(answer) == 200 and ran(srv)


@pytest.mark.parametrize("worker", WORKERS)
def test_a_half_closed_request_gets_its_answer(serve, worker):
    srv = serve(worker)
    answer = exchange(srv, b"GET /cgi-bin/sleep.sh?1 HTTP/1.1\r\nHost: t\r\n\r\n", half_close=True)
    assert status_of(answer) == 200, answer[:300]
    assert answer.endswith(b"woke\n") or b"woke\n" in answer
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize("worker", WORKERS)
@pytest.mark.parametrize("method", [b"TRACE", b"CONNECT"])
def test_trace_and_connect_are_405_and_run_nothing(serve, worker, method):
    srv = serve(worker)
    answer = exchange(srv, method + b" /cgi-bin/touch-ran.sh HTTP/1.1\r\nHost: t\r\nCookie: secret=1\r\n\r\n")
    assert status_of(answer) == 405, answer[:300]
    assert b"\r\nallow: " in answer.lower()
    assert not ran(srv)


def test_trace_can_be_passed_to_scripts(serve):
    srv = serve("gthread", cgi_pass_trace=True)
    answer = exchange(srv, b"TRACE /cgi-bin/touch-ran.sh HTTP/1.1\r\nHost: t\r\n\r\n")
    assert status_of(answer) == 200 and ran(srv)


@pytest.mark.parametrize("worker", WORKERS)
@pytest.mark.parametrize("request_head", [
    b"GET /cgi-bin/touch-ran.sh HTTP/1.1\r\nHost: a b/../x\r\n\r\n",
    b"GET /cgi-bin/touch-ran.sh HTTP/1.1\r\nHost: a/b\r\n\r\n",
    b"GET /cgi-bin/touch-ran.sh HTTP/1.1\r\nHost: h:8o\r\n\r\n",
    b"GET /cgi-bin/touch-ran.sh HTTP/1.1\r\n\r\n",
], ids=["space-and-dots", "slash", "bad-port", "missing"])
def test_a_malformed_or_missing_host_is_400(serve, worker, request_head):
    srv = serve(worker)
    answer = exchange(srv, request_head)
    assert status_of(answer) == 400, answer[:300]
    assert not ran(srv)
    assert "Traceback" not in srv.log()


def test_good_hosts_pass(serve):
    srv = serve("gthread")
    for host in (b"example.com", b"example.com:8080", b"127.0.0.1:80", b"[::1]:8000", b"xn--bcher-kva.example"):
        answer = exchange(srv, b"GET /cgi-bin/life-ok.sh HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host)
        assert status_of(answer) == 200, (host, answer[:200])
