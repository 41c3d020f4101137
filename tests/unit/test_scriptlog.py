"""ScriptLog records byte for byte (mod_cgi's log_scripterror / log_script) and appending them."""

from __future__ import annotations

import os
import stat
import time

import pytest

from gunicorn_cgid import scriptlog

# Wed Jun 05 10:53:21 1996 UTC: a one-digit day of the month, which apr_ctime zero-pads.
JUNE_5_1996 = 833972001.0


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def umask0():
    old = os.umask(0)
    yield
    os.umask(old)


def test_ctime_is_apr_ctime(utc):
    assert scriptlog.ctime(JUNE_5_1996) == "Wed Jun 05 10:53:21 1996"
    assert scriptlog.ctime(0) == "Thu Jan 01 00:00:00 1970"
    assert scriptlog.ctime(951782400.0) == "Tue Feb 29 00:00:00 2000"


def test_ctime_uses_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "EST+5")
    time.tzset()
    try:
        assert scriptlog.ctime(JUNE_5_1996) == "Wed Jun 05 05:53:21 1996"
    finally:
        monkeypatch.undo()
        time.tzset()


def test_format_error_exact(utc):
    record = scriptlog.format_error("GET", "/cgi-bin/x.sh/extra", "a=1&b=2", "HTTP/1.1", 404,
                                    "/srv/cgi-bin/x.sh", "script not found or unable to stat", JUNE_5_1996)
    assert record == (b"%% [Wed Jun 05 10:53:21 1996] GET /cgi-bin/x.sh/extra?a=1&b=2 HTTP/1.1\n"
                      b"%% 404 /srv/cgi-bin/x.sh\n"
                      b"%error\n"
                      b"script not found or unable to stat\n")


def test_format_error_without_query(utc):
    record = scriptlog.format_error("HEAD", "/cgi-bin/x.sh", "", "HTTP/1.0", 200, "/srv/x.sh", "a line", 0)
    assert record.split(b"\n")[0] == b"%% [Thu Jan 01 00:00:00 1970] HEAD /cgi-bin/x.sh HTTP/1.0"


def full(method: str = "POST", body: bytes = b"a=1", stdout: bytes = b"more\n", stderr: bytes = b"oops\n",
         last_line: str = "this is not a header", response: list[tuple[str, str]] | None = None) -> bytes:
    return scriptlog.format_full(
        method, "/cgi-bin/bogus.sh", "q", "HTTP/1.1", 500, "/srv/cgi-bin/bogus.sh",
        [("Host", "example.org"), ("Content-Length", "3")], body,
        response or [], last_line, stdout, stderr, JUNE_5_1996)


def test_format_full_exact(utc):
    record = full(response=[("X-Cgi", "1")])
    assert record == (b"%% [Wed Jun 05 10:53:21 1996] POST /cgi-bin/bogus.sh?q HTTP/1.1\n"
                      b"%% 500 /srv/cgi-bin/bogus.sh\n"
                      b"%request\n"
                      b"Host: example.org\n"
                      b"Content-Length: 3\n"
                      b"\n"
                      b"a=1\n"
                      b"%response\n"
                      b"X-Cgi: 1\n"
                      b"this is not a header\n"
                      b"%stdout\n"
                      b"more\n"
                      b"\n"          # every stdout chunk is followed by a newline, even after one
                      b"%stderr\n"
                      b"oops\n"
                      b"\n")


def test_format_full_stdout_and_stderr_without_final_newline(utc):
    record = full(stdout=b"partial", stderr=b"err")
    assert record.endswith(b"%response\nthis is not a header\n%stdout\npartial\n%stderr\nerr\n")


def test_format_full_empty_sections_are_left_out(utc):
    record = full(method="POST", body=b"", stdout=b"", stderr=b"", last_line="")
    assert record.endswith(b"%request\nHost: example.org\nContent-Length: 3\n%response\n")


@pytest.mark.parametrize("method,shown", [("POST", True), ("PUT", True), ("GET", False), ("DELETE", False),
                                          ("PATCH", False)])
def test_format_full_body_only_for_post_and_put(utc, method, shown):
    record = full(method=method, body=b"the-body")
    assert (b"\nthe-body\n%response\n" in record) is shown
    assert (b"the-body" in record) is shown


def test_format_full_body_is_written_as_given(utc):
    # The caller cuts it at script_log_buffer; binary bytes pass unchanged.
    body = bytes(range(256))
    assert b"\n\n" + body + b"\n%response\n" in full(body=body)


def test_non_ascii_and_undecodable_bytes_are_escaped_not_lost(utc):
    # A path with undecodable bytes (native str with surrogates), a WSGI (latin-1) query and header value:
    # every byte outside printable ASCII shows as \xhh, as in Apache's error log.
    path = b"/cgi-bin/caf\xc3\xa9/\xff.sh".decode("utf-8", "surrogateescape")
    record = scriptlog.format_full(
        "GET", path, "x=\xe9", "HTTP/1.1", 500, "/srv" + path,
        [("X-Latin", "d\xe9j\xe0")], b"", [], "bad \xff", b"", b"", 0)
    assert record.startswith(b"%% [Thu Jan 01 00:00:00 1970] GET /cgi-bin/caf\\xc3\\xa9/\\xff.sh?x=\\xe9 HTTP/1.1\n"
                             b"%% 500 /srv/cgi-bin/caf\\xc3\\xa9/\\xff.sh\n")
    assert b"X-Latin: d\\xe9j\\xe0\n" in record
    assert record.endswith(b"%response\nbad \\xff\n")
    message = "stderr line \udcff"
    assert scriptlog.format_error("GET", path, "", "HTTP/1.1", 200, "/x", message, 0).endswith(
        b"%error\nstderr line \\xff\n")
    # A stderr line may be given as the raw bytes it was read as.
    assert scriptlog.format_error("GET", "/x", "", "HTTP/1.1", 200, "/x", b"bad \xff\xfe end", 0).endswith(
        b"%error\nbad \\xff\\xfe end\n")


# -- forged records ------------------------------------------------------------

def test_newline_in_the_path_cannot_forge_a_line(utc):
    # GET /cgi-bin/zz%0a[CRITICAL]%20FORGED: the decoded path holds a newline.
    record = scriptlog.format_error("GET", "/cgi-bin/zz\n[CRITICAL] FORGED", "", "HTTP/1.1", 404,
                                    "/srv/cgi-bin/zz\n[CRITICAL] FORGED", "script not found or unable to stat", 0)
    assert record == (b"%% [Thu Jan 01 00:00:00 1970] GET /cgi-bin/zz\\n[CRITICAL] FORGED HTTP/1.1\n"
                      b"%% 404 /srv/cgi-bin/zz\\n[CRITICAL] FORGED\n"
                      b"%error\n"
                      b"script not found or unable to stat\n")


def test_every_field_is_escaped(utc):
    record = scriptlog.format_full(
        "GE\rT", "/p\x1b[31m", "q=\n%% x", "HTTP/1.1\n", 500, "/f\x00", [("X\nY", "v\r\n%% 200 /x")], b"",
        [("Status", "5\n")], "bad\x1b]0;title\x07", b"", b"", 0)
    assert record == (b"%% [Thu Jan 01 00:00:00 1970] GE\\rT /p\\x1b[31m?q=\\n%% x HTTP/1.1\\n\n"
                      b"%% 500 /f\\x00\n"
                      b"%request\n"
                      b"X\\nY: v\\r\\n%% 200 /x\n"
                      b"%response\n"
                      b"Status: 5\\n\n"
                      b"bad\\x1b]0;title\\x07\n")


def test_backslash_is_doubled_and_quote_kept(utc):
    # As ap_escape_errorlog_item: "\\n" typed in a URL cannot pass for an escaped newline.
    record = scriptlog.format_error("GET", '/a\\nb"c', "", "HTTP/1.1", 404, "/f", "m", 0)
    assert record.split(b"\n")[0].endswith(b' /a\\\\nb"c HTTP/1.1')


def test_any_surrogate_is_written(utc):
    # Surrogates that stand for no byte (not from surrogateescape) used to raise UnicodeEncodeError.
    record = scriptlog.format_error("GET", "/\ud800", "\udcff\u20ac", "HTTP/1.1", 404, "/\udfff", "\udc00", 0)
    assert record.startswith(b"%% [Thu Jan 01 00:00:00 1970] GET /\\ud800?\\xff\\xe2\\x82\\xac HTTP/1.1\n"
                             b"%% 404 /\\udfff\n%error\n\\udc00\n")


def test_body_and_script_output_stay_raw(utc):
    record = full(body=b"a\nb\x1b", stdout=b"x\ny\xff", stderr=b"e\r\n")
    assert b"\na\nb\x1b\n%response\n" in record
    assert record.endswith(b"%stdout\nx\ny\xff\n%stderr\ne\r\n\n")


# -- append ------------------------------------------------------------------

def test_append_creates_owner_writable_file(tmp_path, umask0):
    path = tmp_path / "cgi.log"
    assert scriptlog.append(str(path), 100, b"one\n")
    assert path.read_bytes() == b"one\n"
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode & 0o022 == 0, oct(mode)
    assert mode & 0o600 == 0o600, oct(mode)


def test_append_appends(tmp_path):
    path = tmp_path / "cgi.log"
    path.write_bytes(b"old\n")
    assert scriptlog.append(str(path), 100, b"new\n")
    assert path.read_bytes() == b"old\nnew\n"


def test_append_size_limit_is_checked_before_writing(tmp_path):
    path = tmp_path / "cgi.log"
    path.write_bytes(b"x" * 10)
    # Exactly at the limit: not "greater than", so one more record, which may overshoot.
    assert scriptlog.append(str(path), 10, b"y" * 50)
    assert path.stat().st_size == 60
    # Past the limit: skipped, the file is not touched.
    assert not scriptlog.append(str(path), 10, b"z")
    assert not scriptlog.append(str(path), 59, b"z")
    assert path.read_bytes() == b"x" * 10 + b"y" * 50


def test_append_to_unopenable_path_is_skipped(tmp_path):
    assert not scriptlog.append(str(tmp_path / "missing-dir" / "cgi.log"), 100, b"r\n")
    assert not (tmp_path / "missing-dir").exists()


def test_append_one_write_per_record(tmp_path, monkeypatch):
    writes = []
    real_write = os.write

    def counting_write(fd, data):
        writes.append(bytes(data))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", counting_write)
    record = full()
    path = tmp_path / "cgi.log"
    assert scriptlog.append(str(path), 1 << 20, record)
    assert scriptlog.append(str(path), 1 << 20, record)
    monkeypatch.undo()
    assert writes == [record, record]
    assert path.read_bytes() == record * 2


def test_append_finishes_a_partial_write(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))
    record = b"0123456789" * 5
    path = tmp_path / "cgi.log"
    assert scriptlog.append(str(path), 100, record)
    monkeypatch.undo()
    assert path.read_bytes() == record


def test_append_dash_writes_to_stderr(capfd):
    assert scriptlog.append("-", 0, b"%% record on stderr\n")
    out, err = capfd.readouterr()
    assert err == "%% record on stderr\n"
    assert out == ""
