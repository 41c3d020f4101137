"""ScriptLog, script stderr and per-script accounting, through a real gunicorn.

The ScriptLog part follows Apache's t/modules/cgi.t (ScriptLog logs/..., ScriptLogLength
40960, ScriptLogBuffer 256) and mod_cgi's record layout.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import time
from pathlib import Path

import pytest

from .conftest import CGI_BIN, wait_until

LOG_SETTINGS = {"script_log": "logs/cgi.log", "script_log_buffer": 256, "script_log_length": 40960}
ACCOUNTING_FORMAT = ('%(s)s %({cgi.exit_status}e)s|%({cgi.wall_ms}e)s %({cgi.cpu_ms}e)s '
                     '%({cgi.maxrss_kb}e)s %(U)s')

_DATE = rb"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) " \
        rb"\d\d \d\d:\d\d:\d\d \d{4}\]"
RECORD_START = re.compile(rb"^%% " + _DATE + rb" ", re.M)


def script(name: str) -> str:
    return str(CGI_BIN / name)


def start_logging(serve, worker: str = "gthread", **settings: object):
    srv = serve(worker, **{**LOG_SETTINGS, "access_log_format": ACCOUNTING_FORMAT, **settings})
    assert (srv.root / "logs").is_dir()  # made by the master for the workers
    return srv, srv.root / "logs" / "cgi.log"


def size(path: Path) -> int:
    return path.stat().st_size if path.exists() else -1


def records(path: Path) -> list[bytes]:
    """The log cut into records; every byte belongs to one, the first starts the file."""
    data = path.read_bytes()
    starts = [m.start() for m in RECORD_START.finditer(data)]
    assert starts and starts[0] == 0, data[:200]
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)], strict=True)]


def records_for(path: Path, filename: str) -> list[bytes]:
    if not path.exists():
        return []
    return [r for r in records(path) if r.split(b"\n")[1].endswith(b" " + os.fsencode(filename))]


def wait_for_record(path: Path, filename: str, marker: bytes, timeout: float = 10) -> bytes:
    found = wait_until(lambda: [r for r in records_for(path, filename) if marker in r], timeout,
                       what="a ScriptLog record for %s with %r" % (filename, marker))
    return found[-1]  # type: ignore[index]


def undated(record: bytes) -> bytes:
    return RECORD_START.sub(b"%% [DATE] ", record, count=1)


def raw_request(srv, data: bytes) -> bytes:
    """Send bytes as they are (the request ends with Connection: close); the whole answer."""
    out = []
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        sock.sendall(data)
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out.append(chunk)
    return b"".join(out)


def access_lines(srv, path: str) -> list[str]:
    if not srv.accesslog.exists():
        return []
    return [ln for ln in srv.accesslog.read_text().splitlines() if ln.endswith(" " + path)]


def access_line(srv, path: str, count: int = 1, timeout: float = 10) -> str:
    """The access log line of the ``count``-th request for ``path`` (the format must end with %(U)s)."""
    lines = wait_until(lambda: access_lines(srv, path)[count - 1:], timeout,
                       what="access log line %d for %s" % (count, path))
    return lines[0]  # type: ignore[index]


def error_lines(srv, pattern: str) -> list[re.Match]:
    text = srv.errorlog.read_text(errors="replace") if srv.errorlog.exists() else ""
    return [m for m in (re.search(pattern, ln) for ln in text.splitlines()) if m]


# -- ScriptLog: Apache's cgi.t -----------------------------------------------

def test_good_request_writes_nothing_then_bogus_creates_and_grows_log(serve):
    old = os.umask(0)  # the server inherits it: the file's mode must not depend on it
    try:
        srv, log = start_logging(serve)
    finally:
        os.umask(old)
    status, _, body = srv.get("/cgi-bin/env.sh")
    assert status == 200 and b"GATEWAY_INTERFACE=CGI/1.1" in body
    access_line(srv, "/cgi-bin/env.sh")
    assert not log.exists()

    status, _, _ = srv.get("/cgi-bin/bogus.sh")
    assert status == 500
    wait_until(lambda: size(log) > 0, what="ScriptLog to be created")
    mode = stat.S_IMODE(log.stat().st_mode)
    assert mode & 0o022 == 0 and mode & 0o200, oct(mode)
    before = size(log)
    status, _, _ = srv.get("/cgi-bin/bogus.sh")
    assert status == 500
    wait_until(lambda: size(log) > before, what="ScriptLog to grow")
    assert len(records_for(log, script("bogus.sh"))) == 2


def test_post_body_logged_up_to_script_log_buffer(serve):
    srv, log = start_logging(serve)
    for length, char in [(10, b"a"), (255, b"b"), (256, b"c"), (257, b"d"), (1024, b"e")]:
        before = size(log)
        status, _, _ = srv.request("POST", "/cgi-bin/bogus.sh", body=char * length)
        assert status == 500
        wait_until(lambda b=before: size(log) > b, what="ScriptLog to grow after a %d-byte POST" % length)
        lines = log.read_bytes().split(b"\n")
        assert char * min(length, 256) in lines, "no line of exactly %d chars" % min(length, 256)
        assert not any(ln.startswith(char * 257) for ln in lines)


def test_log_stops_growing_past_script_log_length(serve):
    srv, log = start_logging(serve)
    line_1k = b"x" * 1024
    for _ in range(60):
        before = size(log)
        if before > 40960:
            break
        status, _, _ = srv.get("/cgi-bin/log-bogus1k.sh")
        assert status == 500
        # The record is written before the 500 goes out: no waiting needed.
        assert size(log) > before, "ScriptLog did not grow at %d bytes" % before
    full = size(log)
    assert 40960 < full < 40960 + 4096  # the last record overshoots, by one record at most
    assert b"\n%response\n" + line_1k + b"\n" in log.read_bytes()
    for method, path in [("GET", "/cgi-bin/log-bogus1k.sh"), ("GET", "/cgi-bin/bogus.sh"),
                         ("POST", "/cgi-bin/bogus.sh"), ("GET", "/cgi-bin/missing.sh")]:
        seen = len(access_lines(srv, path))
        status, _, _ = srv.request(method, path, body=b"z" * 100 if method == "POST" else None)
        assert status in (404, 500)
        access_line(srv, path, count=seen + 1)
        assert size(log) == full, "ScriptLog grew past script_log_length on %s %s" % (method, path)


# -- ScriptLog: record layout ------------------------------------------------

def test_short_records_for_refusals_and_exec_failure(serve):
    srv, log = start_logging(serve)
    cases = [("/cgi-bin/missing.sh", 404, "missing.sh"), ("/cgi-bin/noexec.sh", 403, script("noexec.sh")),
             ("/cgi-bin/badinterp.sh?x=1", 500, script("badinterp.sh"))]
    for n, (url, status, _) in enumerate(cases, 1):
        assert srv.get(url)[0] == status, url
        wait_until(lambda n=n: log.exists() and len(records(log)) >= n, what="a record for %s" % url)
    recs = records(log)
    assert len(recs) == 3
    for rec, (url, status, filename) in zip(recs, cases, strict=True):
        lines = rec.split(b"\n")
        assert lines[0].endswith(b"] GET " + url.encode() + b" HTTP/1.1"), rec
        assert lines[1].startswith(("%%%% %d " % status).encode()) and lines[1].endswith(filename.encode()), rec
        assert lines[2] == b"%error", rec
        assert lines[3] and lines[4:] == [b""], rec  # one message line, then the end of the record
    assert b"script not found" in recs[0]


def test_404_record_names_the_mapped_file(serve):
    srv, log = start_logging(serve)
    assert srv.get("/cgi-bin/missing.sh")[0] == 404
    rec = wait_until(lambda: records(log) if log.exists() else None, what="the 404 record")[0]  # type: ignore[index]
    assert rec.split(b"\n")[1] == b"%% 404 " + script("missing.sh").encode()


def test_full_record_layout(serve):
    srv, log = start_logging(serve)
    answer = raw_request(srv, b"POST /cgi-bin/log-bogus-full.sh?a=1&b=2 HTTP/1.1\r\nHost: h\r\nX-Test: yes\r\n"
                              b"Content-Length: 5\r\nConnection: close\r\n\r\nhello")
    assert answer.startswith(b"HTTP/1.1 500 ")
    filename = script("log-bogus-full.sh")
    rec = wait_for_record(log, filename, b"\n%request\n")
    expected = (b"%% [DATE] POST /cgi-bin/log-bogus-full.sh?a=1&b=2 HTTP/1.1\n"
                b"%% 500 " + filename.encode() + b"\n"
                b"%request\n"
                b"Host: h\n"
                b"X-Test: yes\n"
                b"Content-Length: 5\n"
                b"Connection: close\n"
                b"\n"
                b"hello\n"
                b"%response\n"
                b"this is not a header\n"
                b"%stdout\n"
                b"more stdout\n"
                b"\n")
    # As in Apache, stderr not already logged line by line ends the record.
    assert undated(rec) in (expected, expected + b"%stderr\nan error\n\n"), rec


def test_full_record_response_section_is_the_bad_line(serve):
    srv, log = start_logging(serve)
    assert srv.get("/cgi-bin/log-bogus-hdr.sh")[0] == 500
    rec = wait_for_record(log, script("log-bogus-hdr.sh"), b"\n%request\n")
    assert rec.endswith(b"\n%response\nthis is not a header\n"), rec


def test_failing_script_stderr_is_logged_once(serve):
    srv, log = start_logging(serve)
    assert srv.get("/cgi-bin/log-bogus-full.sh")[0] == 500
    wait_for_record(log, script("log-bogus-full.sh"), b"\n%request\n")
    assert log.read_bytes().count(b"an error\n") == 1


def test_stderr_line_record_holds_the_line(serve):
    srv, log = start_logging(serve)
    assert srv.get("/cgi-bin/stderr.sh")[0] == 200
    rec = wait_for_record(log, script("stderr.sh"), b"%error\n")
    assert undated(rec) == (b"%% [DATE] GET /cgi-bin/stderr.sh HTTP/1.1\n%% 200 " + script("stderr.sh").encode()
                            + b"\n%error\na line on stderr\n")


def test_script_log_dash_writes_to_server_stderr(serve):
    srv = serve("gthread", script_log="-")
    assert srv.get("/cgi-bin/bogus.sh")[0] == 500
    marker = b"%% 500 " + script("bogus.sh").encode() + b"\n%request\n"
    wait_until(lambda: marker in (srv.root / "stdout.log").read_bytes(), what="the record on gunicorn's stderr")
    assert RECORD_START.search((srv.root / "stdout.log").read_bytes())
    assert not (srv.root / "-").exists()


# -- stderr in gunicorn's error log --------------------------------------------

def test_stderr_lines_in_error_log(serve):
    srv = serve("gthread")
    assert srv.get("/cgi-bin/stderr.sh")[0] == 200
    prefix = r"\[client 127\.0\.0\.1:\d+\] AH01215: stderr from %s: " % re.escape(script("stderr.sh"))
    wait_until(lambda: error_lines(srv, prefix + r"a line on stderr$"), what="the stderr line in the error log")

    status, _, body = srv.get("/cgi-bin/log-stderr-lines.py")
    assert (status, body) == (200, b"ok\n")
    prefix = r"stderr from %s: " % re.escape(script("log-stderr-lines.py"))
    wait_until(lambda: error_lines(srv, prefix + r"bad \\xff\\xfe end$"), what="the escaped invalid UTF-8 line")
    pieces = [m.group(1) for m in error_lines(srv, prefix + r"(L+)$")]
    assert sum(map(len, pieces)) == 20000, [len(p) for p in pieces]
    assert len(pieces) >= 3 and max(map(len, pieces)) <= 8192, [len(p) for p in pieces]


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_stderr_flood_before_stdout_does_not_stall(serve, worker):
    srv = serve(worker, cgi_timeout=30, script_log="cgi.log")
    started = time.monotonic()
    status, _, body = srv.get("/cgi-bin/log-stderr-flood.py", timeout=30)
    elapsed = time.monotonic() - started
    assert (status, body) == (200, b"flood done\n")
    assert elapsed < 10, "256 KiB of stderr took %.1f s" % elapsed
    pattern = r"stderr from %s: e{1023}$" % re.escape(script("log-stderr-flood.py"))
    wait_until(lambda: len(error_lines(srv, pattern)) == 256, what="256 stderr lines in the error log")


# -- accounting ------------------------------------------------------------------

def test_exit_status_and_resources_in_access_and_error_log(serve):
    srv = serve("gthread", access_log_format=ACCOUNTING_FORMAT)
    assert srv.get("/cgi-bin/exit7.sh")[:3:2] == (200, b"bye\n")
    assert srv.get("/cgi-bin/env.sh")[0] == 200
    for path, code in [("/cgi-bin/exit7.sh", "7"), ("/cgi-bin/env.sh", "0")]:
        line = access_line(srv, path)
        m = re.fullmatch(r"200 (\S+)\|(\d+\.\d) (\d+\.\d) (\d+) " + re.escape(path), line)
        assert m, line
        assert m.group(1) == code
        assert int(m.group(4)) > 0  # maxrss_kb of a real process
    named = error_lines(srv, re.escape(script("exit7.sh")))
    assert len(named) == 1, [m.string for m in named]
    assert re.search(r"\bstatus 7\b", named[0].string)
    assert error_lines(srv, re.escape(script("env.sh"))) == []


def test_killed_script_status_and_reason(serve):
    srv, log = start_logging(serve, cgi_timeout=1, access_log_format=ACCOUNTING_FORMAT)
    started = time.monotonic()
    status, _, _ = srv.get("/cgi-bin/sleep.sh")
    assert status == 504
    assert time.monotonic() - started < 10
    line = access_line(srv, "/cgi-bin/sleep.sh")
    assert re.fullmatch(r"504 signal (9|15)\|\d+\.\d \d+\.\d \d+ /cgi-bin/sleep\.sh", line), line
    # As Apache: the cause is the one error line; the kill it led to is in
    # the access log (above), not logged a second time.
    wait_until(lambda: error_lines(srv, r"Script timed out before returning headers: sleep\.sh$"),
               what="the timeout line")
    assert error_lines(srv, re.escape(script("sleep.sh")) + r" \(pid \d+\) killed by signal") == [], srv.log()
    wait_for_record(log, script("sleep.sh"), b"\n%request\n")
    assert records_for(log, script("sleep.sh"))[-1].split(b"\n")[1].startswith(b"%% 504 ")
