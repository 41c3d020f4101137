"""StaticFiles as a WSGI callable, without a server: routing, refusals, preconditions, X-Sendfile."""

from __future__ import annotations

import os
import posixpath
import shutil
from email.utils import formatdate, parsedate
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gunicorn_cgid.worker import static
from gunicorn_cgid.worker.static import StaticFiles, http_date, range_applies, refusal

SITE = Path(__file__).resolve().parent.parent / "static" / "site"


def call(app: StaticFiles, path: str, method: str = "GET", raw: str | None = None,
         **headers: str) -> tuple[str, dict[str, str], bytes] | None:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path, "RAW_URI": raw or path,
                               "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_HOST": "example.org",
                               "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "4000"}
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    seen: dict[str, Any] = {}

    def start_response(status: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, {k.lower(): v for k, v in response_headers}

    body = app(environ, start_response)
    if body is None:
        return None
    return seen["status"], seen["headers"], b"".join(body)


def sendfile(app: StaticFiles, path: Path, headers: list[tuple[str, str]], status: str = "200 OK",
             method: str = "GET", **request: str) -> tuple[str, dict[str, str], bytes]:
    environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": "/dl/x.sh"}
    environ.update({"HTTP_" + k.upper(): v for k, v in request.items()})
    seen: dict[str, Any] = {}

    def start_response(line: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = line, {k.lower(): v for k, v in response_headers}

    body = b"".join(app.send_file(environ, start_response, str(path), status, headers))
    return seen["status"], seen["headers"], body


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    shutil.copytree(SITE, root)
    (tmp_path / "secret.txt").write_text("secret\n")
    os.symlink(tmp_path / "secret.txt", root / "leak.txt")
    return root


@pytest.fixture
def app(site: Path) -> StaticFiles:
    return StaticFiles({"/s/": str(site) + "/"})


# -- routing ---------------------------------------------------------------------

def test_a_url_under_no_prefix_costs_no_system_call(app, monkeypatch):
    def no_disk(*args: object) -> None:
        raise AssertionError("the filesystem was touched")

    for name in ("stat", "lstat", "open", "scandir"):
        monkeypatch.setattr(os, name, no_disk)
    assert call(app, "/cgi-bin/hello.sh") is None
    assert call(app, "/s") is None           # the prefix is "/s/", as Apache's Alias
    assert call(app, "/static/s/x") is None


@pytest.mark.parametrize("path, url", [
    ("/s/style.css", "/s/style.css"),
    ("/s/docs/../style.css", "/s/style.css"),
    ("/s/./style.css", "/s/style.css"),
    ("/x/../s/style.css", "/s/style.css"),   # normalisation brings it under the prefix
    ("//s//docs///readme.txt", "/s/docs/readme.txt"),
    ("/s/../secret.txt", None),              # normalisation takes it out: the CGI side answers
    ("/s/../../etc/passwd", None),           # above the root: the CGI side answers 400
    ("/s/a\0b", None),
])
def test_route(app, path, url):
    found = app.route(path)
    assert (found[3] if found else None) == url


def test_the_longest_prefix_wins(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    app = StaticFiles({"/s/": str(tmp_path / "a"), "/s/img/": str(tmp_path / "b")})
    assert app.route("/s/img/x.png")[0] == "/s/img/"
    assert app.route("/s/x.png")[0] == "/s/"


@given(st.lists(st.sampled_from(["..", ".", "", "a", "docs", "%2e", "b.css", "..."]), max_size=8))
def test_a_routed_url_stays_under_its_prefix(segments):
    app = StaticFiles({"/s/": "/srv/static/"})
    found = app.route("/s/" + "/".join(segments))
    if found is not None:
        prefix, root, _, url = found
        assert url.startswith(prefix) and "//" not in url
        assert ".." not in url.split("/") and "." not in url.split("/")
        fs_path = posixpath.normpath(posixpath.join(root, url[len(prefix):]))
        assert fs_path == root or fs_path.startswith(root + "/")


# -- answers ---------------------------------------------------------------------

def test_a_file_with_its_type_and_validators(app, site):
    status, headers, body = call(app, "/s/style.css")
    assert status == "200 OK" and body == (site / "style.css").read_bytes()
    assert headers["content-type"].startswith("text/css") and headers["accept-ranges"] == "bytes"
    assert headers["last-modified"] == formatdate((site / "style.css").stat().st_mtime // 1, usegmt=True)
    assert call(app, "/s/style.css", "HEAD")[1:] == (headers, b"")


def test_types_the_library_table_lacks_come_from_mime_types(app, site):
    (site / "change.patch").write_text("--- a\n+++ b\n")
    (site / "table.csv").write_text("a,b\n")
    assert call(app, "/s/change.patch")[1]["content-type"].startswith("text/x-diff")
    assert call(app, "/s/table.csv")[1]["content-type"].startswith("text/csv")
    assert call(app, "/s/style.css")[1]["content-type"].startswith("text/css")


@pytest.mark.parametrize("path, status, logged", [
    ("/s/missing.css", "404 Not Found", "AH00128"),
    ("/s/docs", "403 Forbidden", "AH01276"),
    ("/s/", "403 Forbidden", "AH01276"),
    ("/s/leak.txt", "403 Forbidden", "AH00037"),
])
def test_refusals_are_apache_pages_and_info_lines(app, path, status, logged, caplog):
    caplog.set_level("INFO", logger="gunicorn.error")
    got, headers, body = call(app, path)
    assert got == status and body.startswith(b"<!DOCTYPE HTML") and headers["content-type"].startswith("text/html")
    assert [r.levelname for r in caplog.records] == ["INFO"] and logged in caplog.text
    assert "[client 127.0.0.1:4000]" in caplog.text
    assert call(app, path, "HEAD")[2] == b""


def test_encoded_slash_bad_host_and_other_methods(app):
    assert call(app, "/s/docs/readme.txt", raw="/s/docs%2Freadme.txt")[0] == "404 Not Found"
    assert call(app, "/s/style.css", host="bad host")[0] == "400 Bad Request"
    status, headers, _ = call(app, "/s/style.css", "POST")
    assert (status, headers["allow"]) == ("405 Method Not Allowed", "GET, HEAD")


def test_a_fifo_is_not_served(app, site):
    os.mkfifo(site / "pipe")
    assert call(app, "/s/pipe")[0] == "403 Forbidden"   # and the open never blocks


def test_preconditions_are_those_of_scripts(app):
    _, headers, _ = call(app, "/s/style.css")
    etag = headers["etag"]
    assert call(app, "/s/style.css", if_none_match="W/%s" % etag)[0] == "304 Not Modified"   # weak comparison
    assert call(app, "/s/style.css", if_none_match='"a", %s' % etag)[0] == "304 Not Modified"
    assert call(app, "/s/style.css", if_none_match="*")[0] == "304 Not Modified"
    assert call(app, "/s/style.css", if_match='"other"')[0] == "412 Precondition Failed"
    assert call(app, "/s/style.css", if_unmodified_since="Mon, 01 Jan 2001 00:00:00 GMT")[0] \
        == "412 Precondition Failed"
    # A date in the future is ignored (Apache), where ServeStatic alone would answer 304.
    assert call(app, "/s/style.css", if_modified_since="Fri, 01 Jan 2100 00:00:00 GMT")[0] == "200 OK"


def test_a_range_needs_a_matching_if_range(app, site):
    data = (site / "style.css").read_bytes()
    _, headers, _ = call(app, "/s/style.css")
    assert call(app, "/s/style.css", range="bytes=0-0")[::2] == ("206 Partial Content", data[:1])
    assert call(app, "/s/style.css", range="bytes=0-3", if_range=headers["etag"])[0] == "206 Partial Content"
    assert call(app, "/s/style.css", range="bytes=0-3", if_range=headers["last-modified"])[0] \
        == "206 Partial Content"
    assert call(app, "/s/style.css", range="bytes=0-3", if_range='"old"')[::2] == ("200 OK", data)


# -- X-Sendfile --------------------------------------------------------------------

def test_sendfile_keeps_the_script_headers_and_status(app, site):
    path = site / "docs" / "readme.txt"
    script = [("Content-Disposition", "attachment"), ("Content-Length", "0"), ("X-Mine", "1")]
    status, headers, body = sendfile(app, path, script, "200 Here It Is")
    assert (status, body) == ("200 Here It Is", path.read_bytes())
    assert headers["content-disposition"] == "attachment" and headers["x-mine"] == "1"
    assert headers["content-length"] == str(len(body)) and headers["content-type"].startswith("text/plain")
    typed = sendfile(app, path, [("content-type", "application/x-thing")])[1]
    assert typed["content-type"] == "application/x-thing"


def test_sendfile_honours_the_script_validators_and_ranges(app, site):
    path = site / "style.css"
    script = [("ETag", '"v7"'), ("Last-Modified", "Mon, 01 Jan 2001 00:00:00 GMT")]
    status, headers, body = sendfile(app, path, script, if_none_match='"v7"')
    assert (status, headers["etag"], body) == ("304 Not Modified", '"v7"', b"")
    assert sendfile(app, path, script, if_modified_since="Mon, 01 Jan 2001 00:00:00 GMT")[0] == "304 Not Modified"
    status, headers, body = sendfile(app, path, script, "200 Fine", range="bytes=1-2")
    assert (status, body) == ("206 Partial Content", path.read_bytes()[1:3])
    assert sendfile(app, path, script, method="HEAD")[2] == b""


def test_sendfile_of_a_file_gone_since_the_check(app, site, caplog):
    status, _, body = sendfile(app, site / "gone.bin", [])
    assert status == "404 Not Found" and body.startswith(b"<!DOCTYPE HTML")
    assert "X-Sendfile: cannot send" in caplog.text and caplog.records[-1].levelname == "ERROR"


# -- pure helpers ------------------------------------------------------------------

@pytest.mark.parametrize("if_range, expected", [
    (None, True),
    ('"abc"', True),
    (' "abc" ', True),
    ('"abd"', False),
    ('W/"abc"', False),                          # a weak tag never matches (strong comparison)
    ("Mon, 01 Jan 2001 00:00:00 GMT", True),
    ("Mon, 01 Jan 2001 00:00:01 GMT", False),
    ("yesterday", False),
])
def test_range_applies(if_range, expected):
    assert range_applies(if_range, '"abc"', "Mon, 01 Jan 2001 00:00:00 GMT") is expected


def test_range_applies_without_validators():
    assert range_applies('"abc"', None, None) is False
    assert range_applies('"abc"', 'W/"abc"', None) is False
    assert range_applies("Mon, 01 Jan 2001 00:00:00 GMT", '"abc"', None) is False


def test_http_date_round_trip():
    text = "Sun, 06 Nov 1994 08:49:37 GMT"
    assert http_date(parsedate(text)) == text
    assert http_date(None) is None


def test_refusal(tmp_path):
    root = tmp_path / "root"
    (root / "dir").mkdir(parents=True)
    (root / "file").write_text("x")
    (tmp_path / "out").write_text("x")
    os.symlink(tmp_path / "out", root / "away")
    os.symlink(root / "nowhere", root / "dangling")
    os.symlink(root / "file", root / "near")
    r = str(root)
    assert refusal(r, r)[0] == 403
    assert refusal(r, r + "/dir")[0] == 403
    assert refusal(r, r + "/missing")[0] == 404
    assert refusal(r, r + "/file/below")[0] == 404      # ENOTDIR
    assert refusal(r, r + "/dangling")[0] == 404
    assert refusal(r, r + "/away") == (403, "AH00037: Symbolic link not allowed or link target not accessible: "
                                       + r + "/away")
    assert refusal(r, r + "/near")[0] == 404             # a regular file ServeStatic hides (a variant)


def test_system_types_never_override_the_library_table():
    types = static.system_types()
    assert ".css" not in types and types[".csv"] == "text/csv"
