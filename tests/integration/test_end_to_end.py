"""The foundation, end to end: real gunicorn, real HTTP, every worker class."""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import threading

import pytest

from .conftest import WORKERS

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def payload() -> bytes:
    return os.urandom(3 * MIB)


def env_of(body: bytes) -> dict[str, str]:
    out = {}
    for line in body.decode().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name] = value
    return out


@pytest.mark.parametrize("worker", WORKERS)
def test_get_with_environment(serve, worker):
    srv = serve(worker)
    status, headers, body = srv.get("/cgi-bin/env.sh/more/path?x=1&y=%20z", headers={"X-Custom": "v"})
    assert status == 200
    env = env_of(body)
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == "/cgi-bin/env.sh"
    assert env["PATH_INFO"] == "/more/path"
    assert env["QUERY_STRING"] == "x=1&y=%20z"
    assert env["REQUEST_URI"] == "/cgi-bin/env.sh/more/path?x=1&y=%20z"
    assert env["SCRIPT_FILENAME"].endswith("/tests/cgi-bin/env.sh")
    assert env["SERVER_PORT"] == str(srv.port)
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_X_CUSTOM"] == "v"
    assert env["CWD"] == os.path.dirname(env["SCRIPT_FILENAME"])
    assert "gunicorn-cgid" in env["SERVER_SOFTWARE"]
    # Nothing of gunicorn's own environment leaks into the script.
    assert not any(k.startswith("GUNICORN") for k in env)
    assert headers["x-cgi-pid"].isdigit()


@pytest.mark.parametrize("worker", WORKERS)
def test_post_echo_content_length_and_chunked(serve, worker, payload):
    srv = serve(worker)
    status, _, body = srv.request("POST", "/cgi-bin/echo.py", body=payload)
    assert status == 200
    assert body == payload

    def chunks():
        for i in range(0, len(payload), 100_000):
            yield payload[i:i + 100_000]

    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request("POST", "/cgi-bin/echo.py", body=chunks(), encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.read() == payload
    conn.close()


@pytest.mark.parametrize("worker", WORKERS)
def test_large_response_streams(serve, worker):
    srv = serve(worker)
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    conn.request("GET", "/cgi-bin/big.py?17")
    resp = conn.getresponse()
    assert resp.status == 200
    h = hashlib.sha256()
    total = 0
    while True:
        chunk = resp.read(256 * 1024)
        if not chunk:
            break
        total += len(chunk)
        h.update(chunk)
    block = bytes(range(256)) * 4096
    assert total == 17 * MIB
    assert h.hexdigest() == hashlib.sha256(block * 17).hexdigest()
    conn.close()


@pytest.mark.parametrize("worker", WORKERS)
def test_script_writes_before_reading(serve, worker):
    srv = serve(worker)
    body = os.urandom(MIB)
    status, _, out = srv.request("POST", "/cgi-bin/writefirst.py", body=body)
    assert status == 200
    assert out.startswith(b"x" * MIB)
    assert out.endswith(("read=%d sha256=%s\n" % (MIB, hashlib.sha256(body).hexdigest())).encode())


@pytest.mark.parametrize("worker", WORKERS)
def test_error_statuses(serve, worker):
    srv = serve(worker)
    assert srv.get("/cgi-bin/missing.sh")[0] == 404
    assert srv.get("/cgi-bin/")[0] == 403
    assert srv.get("/cgi-bin/noexec.sh")[0] == 403
    assert srv.get("/cgi-bin/bogus.sh")[0] == 500
    assert srv.get("/cgi-bin/empty.sh")[0] == 500
    assert srv.get("/cgi-bin/badinterp.sh")[0] == 500
    assert srv.get("/elsewhere")[0] == 404
    log = srv.log()
    assert "file permissions deny server execution" in log
    assert "ENOENT" in log  # the exec failure names its errno


@pytest.mark.parametrize("worker", WORKERS)
def test_nph_passes_raw(serve, worker):
    srv = serve(worker)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
        s.sendall(b"GET /cgi-bin/nph-test.sh HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break  # the connection closes after an NPH response
            data += chunk
    assert data == b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nX-Raw: yes\r\n\r\nok\n"


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_200_concurrent_requests(serve, worker):
    srv = serve(worker, workers=2, threads=32)
    results: list[tuple[int, bytes]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        try:
            status, _, body = srv.get("/cgi-bin/env.sh?n%d" % i, timeout=60)
            with lock:
                results.append((status, body))
            assert ("ARGV1=n%d" % i).encode() in body
        except BaseException as exc:  # collected and re-raised below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(results) == 200
    assert all(status == 200 for status, _ in results)


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_script_starts_clean(serve, worker):
    """Only stdin, stdout and stderr are open; no signal is blocked or ignored by inheritance."""
    srv = serve(worker)
    for _ in range(5):  # a leak from a concurrent spawn would show in some of them
        status, _, body = srv.get("/cgi-bin/fds.sh")
        assert status == 200
        fds = sorted(int(fd) for fd in body.split())
        assert fds == [0, 1, 2, 3], fds  # 3: the directory ls is reading
    status, _, body = srv.get("/cgi-bin/sigs.sh")
    assert status == 200
    sigs = dict(line.split(":\t") for line in body.decode().splitlines())
    assert int(sigs["SigBlk"], 16) == 0
    # SIGPIPE (bit 13) must not be inherited ignored from the daemon.
    assert not int(sigs["SigIgn"], 16) & (1 << (13 - 1))


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_stdin_is_dev_null_without_a_body_and_a_socket_with_one(serve, worker):
    """A request without a body costs no socketpair: its script reads EOF from /dev/null."""
    srv = serve(worker)
    assert srv.get("/cgi-bin/stdin.sh")[::2] == (200, b"character special file\n")
    assert srv.request("POST", "/cgi-bin/stdin.sh", body=b"")[::2] == (200, b"character special file\n")
    assert srv.request("POST", "/cgi-bin/stdin.sh", body=b"abc")[::2] == (200, b"socket\nabc")
    for _ in range(3):  # the worker's /dev/null is reused, never closed by a request
        assert srv.get("/cgi-bin/stdin.sh")[::2] == (200, b"character special file\n")


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_client_gone_after_a_large_body_kills_the_script(serve, worker):
    """Once a large body is read, a client that resets is noticed while the script is silent."""
    from .conftest import descendants, pid_alive, wait_until

    srv = serve(worker, cgi_timeout=60)
    body = b"x" * (300 * 1024)  # above the inline size: a helper reads it
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"POST /cgi-bin/drain-sleep.sh?30 HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    daemon = srv.daemon_pid()
    scripts = wait_until(lambda: [p for p in descendants(daemon) if pid_alive(p)], 10, what="the script to start")
    # A reset: a plain close after a complete request is a half-close (still answered).
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    s.close()
    wait_until(lambda: not any(pid_alive(p) for p in scripts), 3, what="the script to be killed")
