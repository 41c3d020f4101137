"""CGI/1.1 and Apache conformance, black-box against a real gunicorn.

The scenarios follow Apache httpd's own test suite for mod_cgi/mod_cgid
(t/modules/cgi.t, apache/acceptpathinfo.t, pr37166.t, server_name_port.t...)
where they apply. Raw sockets are used wherever http.client would hide what
is checked: the status line's reason, NPH output, bytes after the headers,
repeated headers, request lines it would not send.

One server per test; the tests that depend on how the worker moves bytes run
under gthread and gevent, the others under gthread only.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import CGI_BIN, wait_until

BOTH = ["gthread", "gevent"]
TIMEOUT = 15.0
# Settings for every server here: one worker boots faster, and a stuck script
# fails the test well before pytest's own timeout.
FAST = {"workers": 1, "cgi_timeout": 15}

# Variables the server may give a script on a plain request (beyond HTTP_*),
# plus what the shell and conf-env.sh itself add.
ALLOWED_NAMES = {
    "GATEWAY_INTERFACE", "SERVER_PROTOCOL", "REQUEST_METHOD", "QUERY_STRING", "REQUEST_URI",
    "SCRIPT_NAME", "PATH_INFO", "PATH_TRANSLATED", "SCRIPT_FILENAME", "DOCUMENT_ROOT",
    "CONTEXT_PREFIX", "CONTEXT_DOCUMENT_ROOT", "SERVER_NAME", "SERVER_PORT", "SERVER_ADDR",
    "SERVER_SOFTWARE", "SERVER_SIGNATURE", "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_SCHEME", "PATH",
    "CONTENT_TYPE", "CONTENT_LENGTH", "CGID_TEST_MARKER",
    "PWD", "OLDPWD", "SHLVL", "_", "ARGC", "CWD",
}


# -- raw HTTP ---------------------------------------------------------------------

@dataclass
class Raw:
    status_line: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    rest: bytes = b""       # bytes after a framed body (read to EOF)

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[-1] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class Conn:
    """One client connection; reads responses with their HTTP/1.1 framing, under a deadline."""

    def __init__(self, port: int, timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.deadline = time.monotonic() + timeout
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        self.sock.settimeout(max(0.01, self.deadline - time.monotonic()))
        data = self.sock.recv(65536)
        self.buf += data
        return bool(data)

    def _line(self) -> bytes:
        while b"\n" not in self.buf:
            if not self._fill():
                raise AssertionError("connection closed mid-line: %r" % self.buf[:200])
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise AssertionError("connection closed after %d of %d body bytes" % (len(self.buf), n))
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_to_eof(self) -> bytes:
        while self._fill():
            pass
        data, self.buf = self.buf, b""
        return data

    def response(self, head: bool = False) -> Raw:
        """One response; a body without length or chunking is read to EOF."""
        resp = Raw(self._line().decode("latin-1"))
        while True:
            line = self._line()
            if not line:
                break
            name, _, value = line.decode("latin-1").partition(":")
            resp.headers.append((name, value.strip()))
        if head or resp.status in (204, 304):
            return resp
        if (resp.header("transfer-encoding") or "").lower() == "chunked":
            parts = []
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                parts.append(self._exactly(size))
                assert self._exactly(2) == b"\r\n", "bad chunk framing"
            resp.body = b"".join(parts)
        elif resp.header("content-length") is not None:
            resp.body = self._exactly(int(resp.header("content-length") or 0))
        else:
            resp.body = self.read_to_eof()
        return resp


def request_bytes(method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                  version: str = "HTTP/1.1", close: bool = True) -> bytes:
    lines = ["%s %s %s" % (method, target, version)]
    names = {k.lower() for k, _ in headers or []}
    if version == "HTTP/1.1" and "host" not in names:
        lines.append("Host: 127.0.0.1")
    lines += ["%s: %s" % (k, v) for k, v in headers or []]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def fetch(srv, method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"",
          version: str = "HTTP/1.1") -> Raw:
    """One request on its own connection ("Connection: close"); anything after the response is kept in ``rest``."""
    with Conn(srv.port) as conn:
        conn.send(request_bytes(method, target, headers, body, version))
        resp = conn.response(head=method == "HEAD")
        resp.rest = conn.read_to_eof()
        return resp


def raw_exchange(srv, data: bytes) -> bytes:
    """Send bytes, return everything until the server closes the connection."""
    with Conn(srv.port) as conn:
        conn.send(data)
        return conn.read_to_eof()


def env_of(body: bytes) -> dict[str, str]:
    """conf-env.sh output: NUL-terminated NAME=value entries."""
    out = {}
    for entry in body.split(b"\0"):
        name, sep, value = entry.partition(b"=")
        if sep:
            out[name.decode()] = value.decode("utf-8", "surrogateescape")
    return out


def token() -> str:
    return uuid.uuid4().hex[:12]


def log_count(srv, text: str) -> int:
    return srv.errorlog.read_text(errors="replace").count(text) if srv.errorlog.exists() else 0


def wait_for_log(srv, text: str, count: int = 1) -> None:
    wait_until(lambda: log_count(srv, text) >= count, TIMEOUT, what="%r in the error log" % text)


# -- Apache's t/modules/cgi.t ---------------------------------------------------------

@pytest.mark.parametrize("worker", BOTH)
def test_perl_sh_nph_and_bogus_scripts(serve, worker):
    srv = serve(worker, **FAST)
    for script, text in (("conf-perl.pl", b"perl cgi\n"), ("conf-sh.sh", b"sh cgi\n")):
        resp = fetch(srv, "GET", "/cgi-bin/" + script)
        assert (resp.status, resp.body) == (200, text), script
        assert resp.header("content-type") == "text/plain"

    head = fetch(srv, "HEAD", "/cgi-bin/conf-perl.pl")
    assert head.status == 200
    assert head.rest == b""

    for script in ("conf-bogus.pl", "bogus.sh"):
        assert fetch(srv, "GET", "/cgi-bin/" + script).status == 500, script

    # NPH: the script's bytes, untouched, then the server closes the connection
    # although the request asked for keep-alive.
    out = raw_exchange(srv, request_bytes("GET", "/cgi-bin/nph-conf-test.pl", close=False))
    assert out == b"HTTP/1.0 200 OK\r\nContent-type: text/plain\r\nX-Nph-Raw: yes\r\n\r\nok\n"


@pytest.mark.parametrize("worker", BOTH)
def test_stderr_scenarios(serve, worker):
    srv = serve(worker, **FAST)
    # stderr1: 8 KB on stderr before any header, then 1 MiB (more than any
    # socket buffer) on another run: no deadlock either way.
    for count in ("1", "128"):
        resp = fetch(srv, "GET", "/cgi-bin/conf-stderr1.pl?" + count)
        assert (resp.status, resp.body) == (200, b"this is stdout"), count
    wait_for_log(srv, "x" * 8000)

    # stderr2: stderr closed, then a second of silence.
    started = time.monotonic()
    resp = fetch(srv, "GET", "/cgi-bin/conf-stderr2.pl")
    assert (resp.status, resp.body) == (200, b"this is also stdout")
    assert time.monotonic() - started >= 0.9

    # stderr3: stdout closed first, stderr written after: the response still
    # ends, and the late stderr line is logged.
    tok = token()
    resp = fetch(srv, "GET", "/cgi-bin/conf-stderr3.pl?" + tok)
    assert (resp.status, resp.body, resp.rest) == (200, b"this is more stdout", b"")
    wait_for_log(srv, "conf-stderr3 after stdout closed " + tok)

    tok = token()
    out = raw_exchange(srv, request_bytes("GET", "/cgi-bin/nph-conf-stderr.pl?" + tok))
    assert out == b"HTTP/1.0 200 OK\r\nContent-type: text/plain\r\n\r\nthis is nph-stdout"
    wait_for_log(srv, "nph-conf-stderr says hello " + tok)


@pytest.mark.parametrize("worker", BOTH)
def test_header_blocks(serve, worker):
    srv = serve(worker, **FAST)
    for mode in ("lf", "crlf"):
        resp = fetch(srv, "GET", "/cgi-bin/conf-out.sh?" + mode)
        assert (resp.status, resp.header("x-block"), resp.body) == (200, mode, mode.encode() + b" body\n")
    # A header line over 8 KiB, and a line without a colon: 500, nothing of the script's.
    for mode in ("long", "nocolon"):
        resp = fetch(srv, "GET", "/cgi-bin/conf-out.sh?" + mode)
        assert resp.status == 500, mode
        assert b"never" not in resp.body
    wait_for_log(srv, "too long")
    wait_for_log(srv, "malformed header from script")


# -- status, framing, headers ---------------------------------------------------------

@pytest.mark.parametrize("worker", BOTH)
def test_status_and_framing(serve, worker):
    srv = serve(worker, **FAST)
    resp = fetch(srv, "GET", "/cgi-bin/conf-out.sh?reason")
    assert resp.status_line == "HTTP/1.1 418 Custom Reason"
    assert resp.body == b"teapot\n"

    for mode in ("status999", "status099", "te"):
        resp = fetch(srv, "GET", "/cgi-bin/conf-out.sh?" + mode)
        assert resp.status == 502, mode
        assert b"never" not in resp.body and b"hello" not in resp.body
    wait_for_log(srv, "script sent Transfer-Encoding")

    # A script claiming Content-Length: 100 but writing 5 bytes: the client
    # gets 5 bytes in a well-framed response, and the connection stays usable.
    with Conn(srv.port) as conn:
        conn.send(request_bytes("GET", "/cgi-bin/conf-out.sh?cl", close=False))
        resp = conn.response()
        assert resp.status == 200
        assert resp.body == b"hello"
        assert resp.header("content-length") in (None, "5")
        conn.send(request_bytes("GET", "/cgi-bin/conf-sh.sh"))
        second = conn.response()
        assert (second.status, second.body) == (200, b"sh cgi\n")

    resp = fetch(srv, "GET", "/cgi-bin/conf-out.sh?cookies")
    assert resp.status == 200
    assert resp.all("set-cookie") == ["a=1; Path=/", "b=2; Path=/"]


@pytest.mark.parametrize("worker", BOTH)
def test_head_and_conditionals(serve, worker):
    srv = serve(worker, **FAST)
    # HEAD: 200, the script's headers, no body, and the script did run.
    tok = token()
    resp = fetch(srv, "HEAD", "/cgi-bin/conf-head.sh?" + tok)
    assert resp.status == 200
    assert resp.header("x-conf-head") == "HEAD"
    assert resp.rest == b""
    wait_for_log(srv, "conf-head ran HEAD " + tok)

    # An explicit Status: 304 goes out as 304, with nothing after the headers.
    resp = fetch(srv, "GET", "/cgi-bin/conf-cond.sh?status304")
    assert (resp.status, resp.rest) == (304, b"")

    lm = "Sat, 01 Jan 2000 00:00:00 GMT"
    # pr37166: an explicit Status: 200 turns the conditional check off.
    resp = fetch(srv, "GET", "/cgi-bin/conf-cond.sh?status200-lm", [("If-Modified-Since", lm)])
    assert (resp.status, resp.body) == (200, b"body\n")
    # Without a Status header the script's Last-Modified is checked.
    resp = fetch(srv, "GET", "/cgi-bin/conf-cond.sh?lm", [("If-Modified-Since", lm)])
    assert (resp.status, resp.rest) == (304, b"")
    resp = fetch(srv, "GET", "/cgi-bin/conf-cond.sh?lm", [("If-Modified-Since", "Fri, 31 Dec 1999 23:59:59 GMT")])
    assert (resp.status, resp.body) == (200, b"body\n")
    resp = fetch(srv, "GET", "/cgi-bin/conf-cond.sh?etag", [("If-None-Match", '"conf-v1"')])
    assert (resp.status, resp.rest) == (304, b"")
    assert resp.header("etag") == '"conf-v1"'
    resp = fetch(srv, "GET", "/cgi-bin/conf-cond.sh?etag", [("If-None-Match", '"other"')])
    assert (resp.status, resp.body) == (200, b"body\n")
    resp = fetch(srv, "GET", "/cgi-bin/conf-cond.sh?etag", [("If-Match", '"other"')])
    assert resp.status == 412
    resp = fetch(srv, "GET", "/cgi-bin/conf-cond.sh?etag", [("If-Match", '"conf-v1"')])
    assert (resp.status, resp.body) == (200, b"body\n")


# -- redirects ------------------------------------------------------------------------------

@pytest.mark.parametrize("worker", BOTH)
def test_redirects(serve, worker):
    srv = serve(worker, **FAST)
    # A local Location without Status: the client sees the target's response,
    # run as a GET with the REDIRECT_* variables.
    resp = fetch(srv, "POST", "/cgi-bin/conf-redirect.sh?local", [("Content-Type", "text/plain")], b"hello")
    assert resp.status == 200
    assert resp.header("location") is None
    env = env_of(resp.body)
    assert env["SCRIPT_NAME"] == "/cgi-bin/conf-env.sh"
    assert env["PATH_INFO"] == "/after"
    assert env["QUERY_STRING"] == "from=redirect"
    assert env["REQUEST_METHOD"] == "GET"
    assert env["REQUEST_URI"] == "/cgi-bin/conf-redirect.sh?local"
    assert env["REDIRECT_STATUS"] == "200"
    assert env["REDIRECT_URL"] == "/cgi-bin/conf-redirect.sh"
    assert env["REDIRECT_QUERY_STRING"] == "local"
    assert env["REDIRECT_REQUEST_METHOD"] == "POST"
    assert env["REDIRECT_SCRIPT_FILENAME"] == str(CGI_BIN / "conf-redirect.sh")
    assert "CONTENT_LENGTH" not in env and "CONTENT_TYPE" not in env
    assert env["ARGC"] == "0"

    # A redirect loop is cut after 10 internal redirects (11 runs) with a 500.
    tok = token()
    resp = fetch(srv, "GET", "/cgi-bin/conf-redirect.sh?loop-" + tok)
    assert resp.status == 500
    wait_for_log(srv, "conf-redirect hop loop-" + tok, 11)
    assert log_count(srv, "conf-redirect hop loop-" + tok) == 11
    wait_for_log(srv, "redirect loop")

    # An absolute Location: 302 with the server's own body; the script's other
    # headers are kept.
    resp = fetch(srv, "GET", "/cgi-bin/conf-redirect.sh?absolute")
    assert resp.status_line == "HTTP/1.1 302 Found"
    assert resp.header("location") == "http://elsewhere.example/landing"
    assert resp.all("set-cookie") == ["kept=1"]
    assert resp.header("x-conf") == "kept"
    assert b"ignored body" not in resp.body
    assert b"http://elsewhere.example/landing" in resp.body


def test_internal_redirect_decodes_the_location_path(serve):
    srv = serve("gthread", **FAST)
    resp = fetch(srv, "GET", "/cgi-bin/conf-redirect.sh?encoded")
    assert resp.status == 200
    assert env_of(resp.body)["PATH_INFO"] == "/a b"


@pytest.mark.parametrize("worker", BOTH)
def test_head_to_nph_script_gets_its_status_line(serve, worker):
    srv = serve(worker, **FAST)
    out = raw_exchange(srv, request_bytes("HEAD", "/cgi-bin/nph-conf-test.pl"))
    assert out.startswith(b"HTTP/1.0 200 OK\r\nContent-type: text/plain\r\nX-Nph-Raw: yes\r\n\r\n")


# -- environment -------------------------------------------------------------------------------

@pytest.mark.parametrize("worker", BOTH)
def test_environment(serve, worker):
    srv = serve(worker, **FAST)
    resp = fetch(srv, "GET", "/cgi-bin/conf-env.sh/p%20q/r?foo+bar%20baz", [
        ("Host", "[::1]:8080"),
        ("X_Foo", "spoof"),
        ("X-Foo", "real"),
        ("Proxy", "http://evil.example:3128/"),
        ("Cookie", "a=1"),
        ("Cookie", "b=2"),
        ("Accept", "text/plain"),
        ("Accept", "text/html"),
        ("Authorization", "Basic dXNlcjpwdw=="),
    ])
    assert resp.status == 200
    env = env_of(resp.body)
    expected = {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "foo+bar%20baz",
        "REQUEST_URI": "/cgi-bin/conf-env.sh/p%20q/r?foo+bar%20baz",
        "SCRIPT_NAME": "/cgi-bin/conf-env.sh",
        "PATH_INFO": "/p q/r",
        "PATH_TRANSLATED": str(srv.root) + "/p q/r",
        "SCRIPT_FILENAME": str(CGI_BIN / "conf-env.sh"),
        "DOCUMENT_ROOT": str(srv.root),
        "CONTEXT_PREFIX": "/cgi-bin/",
        "CONTEXT_DOCUMENT_ROOT": str(CGI_BIN) + "/",
        "SERVER_NAME": "[::1]",
        "SERVER_PORT": "8080",
        "SERVER_ADDR": "127.0.0.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_SCHEME": "http",
        "SERVER_SIGNATURE": "",
        "HTTP_HOST": "[::1]:8080",
        "HTTP_X_FOO": "real",
        "HTTP_COOKIE": "a=1; b=2",
        "HTTP_ACCEPT": "text/plain, text/html",
        "CGID_TEST_MARKER": str(srv.root),
        "ARGC": "2",
        "ARGV1": "foo",
        "ARGV2": "bar baz",
        "CWD": str(CGI_BIN),
    }
    assert {k: env.get(k) for k in expected} == expected
    for name in ("HTTP_PROXY", "HTTP_AUTHORIZATION", "HTTPS", "CONTENT_LENGTH", "CONTENT_TYPE",
                 "REMOTE_USER", "AUTH_TYPE"):
        assert name not in env, name
    assert env["REMOTE_PORT"].isdigit()
    assert "gunicorn-cgid" in env["SERVER_SOFTWARE"]
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    unexpected = {k for k in env if k not in ALLOWED_NAMES and not k.startswith(("HTTP_", "ARGV"))}
    assert not unexpected

    # Host without a port: the local port. No Host at all (HTTP/1.0): the local address.
    env = env_of(fetch(srv, "GET", "/cgi-bin/conf-env.sh?a=b", [("Host", "Example.ORG")]).body)
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["ARGC"]) == ("example.org", str(srv.port), "0")
    env = env_of(fetch(srv, "GET", "/cgi-bin/conf-env.sh", version="HTTP/1.0").body)
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["SERVER_PROTOCOL"]) == ("127.0.0.1", str(srv.port), "HTTP/1.0")
    # An absolute request URI wins over Host.
    env = env_of(fetch(srv, "GET", "http://Abs.Example:81/cgi-bin/conf-env.sh", [("Host", "other.example")]).body)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("abs.example", "81")
    assert env["REQUEST_URI"] == "http://Abs.Example:81/cgi-bin/conf-env.sh"
    # A Host Apache would refuse does not become SERVER_NAME.
    env = env_of(fetch(srv, "GET", "/cgi-bin/conf-env.sh", [("Host", "a..b")]).body)
    assert env["SERVER_NAME"] == "127.0.0.1"

    # Request bodies: CONTENT_LENGTH and CONTENT_TYPE, never HTTP_CONTENT_*; none for chunked.
    env = env_of(fetch(srv, "POST", "/cgi-bin/conf-env.sh", [("Content-Type", "text/plain")], b"hello").body)
    assert (env["CONTENT_LENGTH"], env["CONTENT_TYPE"], env["REQUEST_METHOD"]) == ("5", "text/plain", "POST")
    assert not [k for k in env if k.startswith("HTTP_CONTENT")]
    env = env_of(fetch(srv, "POST", "/cgi-bin/conf-env.sh", [("Transfer-Encoding", "chunked")],
                       b"5\r\nhello\r\n0\r\n\r\n").body)
    assert "CONTENT_LENGTH" not in env
    assert env["HTTP_TRANSFER_ENCODING"] == "chunked"


# -- mapping ----------------------------------------------------------------------------------

def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho %s\n" % text)
    path.chmod(0o755)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """Script directories beside tests/cgi-bin: nested aliases, links in and out, a document root."""
    tmp_path.chmod(0o755)
    _script(tmp_path / "cgi" / "run.sh", "run")
    _script(tmp_path / "cgi" / "sub" / "deep.sh", "deep")
    _script(tmp_path / "inner" / "run.sh", "inner")
    _script(tmp_path / "outside" / "evil.sh", "evil")
    _script(tmp_path / "www" / "app.cgi", "app")
    _script(tmp_path / "www" / "cgi-binx" / "seg.cgi", "seg")
    _script(tmp_path / "www" / "readme.txt", "readme")
    (tmp_path / "cgi" / "inside.sh").symlink_to("run.sh")
    (tmp_path / "cgi" / "escape.sh").symlink_to(tmp_path / "outside" / "evil.sh")
    (tmp_path / "cgi" / "escdir").symlink_to(tmp_path / "outside")
    for d in tmp_path.rglob("*"):
        if d.is_dir() and not d.is_symlink():
            d.chmod(0o755)
    return tmp_path


def test_mapping(serve, tree):
    srv = serve("gthread", **FAST, script_alias={
        "/cgi-bin/": str(CGI_BIN) + "/",
        "/t/": str(tree / "cgi") + "/",
        "/t/inner/": str(tree / "inner") + "/",
        "/single": str(CGI_BIN / "conf-env.sh"),
    }, cgi_document_root=str(tree / "www"), cgi_extensions=[".cgi"])

    def status(target: str) -> int:
        return fetch(srv, "GET", target).status

    def body(target: str) -> bytes:
        resp = fetch(srv, "GET", target)
        assert resp.status == 200, (target, resp.status_line)
        return resp.body

    # Dot segments are resolved before mapping; above the root is a 400.
    assert body("/cgi-bin/../cgi-bin/conf-sh.sh") == b"sh cgi\n"
    assert body("/cgi-bin/./conf-sh.sh") == b"sh cgi\n"
    assert body("/t/sub/../run.sh") == b"run\n"
    assert body("/cgi-bin/%2e%2e/t/run.sh") == b"run\n"
    for target in ("/cgi-bin/../../etc/passwd", "/cgi-bin/%2e%2e/%2e%2e/etc/passwd", "/../etc/passwd"):
        assert status(target) == 400, target
    # Encoded slashes, missing scripts: 404. Directories: 403.
    for target in ("/cgi-bin/conf-env.sh%2Fx", "/cgi-bin%2Fconf-sh.sh", "/t/sub%2fdeep.sh",
                   "/cgi-bin/missing.sh", "/cgi-bin/missing.sh/x", "/nowhere.cgi"):
        assert status(target) == 404, target
    for target in ("/cgi-bin/", "/t/sub", "/t/sub/", "/"):
        assert status(target) == 403, target
    # Longest prefix wins; prefixes match whole segments only.
    assert body("/t/inner/run.sh") == b"inner\n"
    assert body("/t/sub/deep.sh") == b"deep\n"
    assert body("/cgi-binx/seg.cgi") == b"seg\n"
    # A prefix mapped to one file: the rest of the path is PATH_INFO.
    env = env_of(body("/single/extra/x"))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"], env["CONTEXT_PREFIX"]) == ("/single", "/extra/x", "/single")
    assert env["SCRIPT_FILENAME"] == str(CGI_BIN / "conf-env.sh")
    assert status("/singlex") == 404
    # Links inside the tree run; links out of it are refused.
    assert body("/t/inside.sh") == b"run\n"
    assert status("/t/escape.sh") == 403
    assert status("/t/escdir/evil.sh") == 403
    # Handler-style document root: listed extensions run, other files are refused.
    assert body("/app.cgi") == b"app\n"
    assert status("/readme.txt") == 403
    env_path = body("/cgi-bin/conf-env.sh")
    assert env_of(env_path)["DOCUMENT_ROOT"] == str(tree / "www")


def test_settings_that_change_behaviour(serve, tree, monkeypatch):
    monkeypatch.setenv("CONF_PASSED", "from the server environment")
    # This cgi_env replaces serve()'s marker variable; the scripts still carry
    # the server's root as DOCUMENT_ROOT, which is what finds strays.
    srv = serve("gthread", **FAST, cgi_accept_path_info=False, cgi_pass_auth=True, cgi_follow_symlinks=True,
                cgi_pass_env=["CONF_PASSED", "CONF_NOT_SET"],
                cgi_env={"PATH": "/conf/custom/bin:/usr/bin:/bin", "CONF_SET": "x",
                         "SERVER_NAME": "from-setenv", "HTTP_X_SET": "from-setenv"},
                script_alias={"/cgi-bin/": str(CGI_BIN) + "/", "/t/": str(tree / "cgi") + "/"})

    # AcceptPathInfo off: extra path is a 404, the bare script still runs.
    assert fetch(srv, "GET", "/cgi-bin/conf-env.sh/foo").status == 404
    resp = fetch(srv, "GET", "/cgi-bin/conf-env.sh", [("Authorization", "Basic dXNlcjpwdw=="),
                                                      ("X-Set", "from-request")])
    assert resp.status == 200
    env = env_of(resp.body)
    assert env["HTTP_AUTHORIZATION"] == "Basic dXNlcjpwdw=="
    assert env["PATH"] == "/conf/custom/bin:/usr/bin:/bin"
    assert env["CONF_SET"] == "x"
    assert env["CONF_PASSED"] == "from the server environment"
    assert "CONF_NOT_SET" not in env
    # The request's variables override SetEnv (PATH excepted).
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["HTTP_X_SET"] == "from-request"
    # cgi_follow_symlinks: a link out of the tree runs.
    resp = fetch(srv, "GET", "/t/escape.sh")
    assert (resp.status, resp.body) == (200, b"evil\n")


def test_scripts_here_are_executable():
    """The conformance scripts must keep their mode bits (a lost bit would read as a 403 above)."""
    for path in list(CGI_BIN.glob("conf-*")) + list(CGI_BIN.glob("nph-conf-*")):
        assert os.access(path, os.X_OK), path
