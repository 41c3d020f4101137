"""Static files (static_alias) and X-Sendfile answers on a real gunicorn.

The fixture tree (tests/static) is copied for each server, so a test can add
files, links and variants to it while the server runs.
"""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import pytest

from .conftest import CGI_BIN, wait_until

pytestmark = pytest.mark.timeout(60)

STATIC = Path(__file__).resolve().parent.parent / "static"
SITE = STATIC / "site"
FILES = STATIC / "files"
SECRET = b"outside the static directory\n"
ERROR_PAGE = b"<!DOCTYPE HTML PUBLIC"


def layout(base: Path) -> tuple[Path, Path]:
    """A copy of the site and the download directory, with a secret beside them and links in."""
    site, files = base / "site", base / "files"
    shutil.copytree(SITE, site)
    shutil.copytree(FILES, files)
    (base / "secret.txt").write_bytes(SECRET)
    (base / "outside").mkdir()
    (base / "outside" / "secret.txt").write_bytes(SECRET)
    os.symlink(base / "secret.txt", site / "leak.txt")      # a file outside
    os.symlink(base / "outside", site / "outdir")            # a directory outside
    os.symlink("style.css", site / "inside.css")             # a link that stays inside
    return site, files


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    return layout(tmp_path)


def static_server(serve, tree: tuple[Path, Path], worker: str = "gthread"):
    site, files = tree
    return serve(worker, static_alias={"/s/": str(site) + "/"},
                 script_alias={"/cgi-bin/": str(CGI_BIN) + "/",
                               "/dl/": {"path": str(CGI_BIN) + "/", "x_sendfile": [str(files) + "/"]}})


def logged(srv, text: str) -> str:
    """The error log once it holds ``text`` (lines reach the file shortly after the response)."""
    return str(wait_until(lambda: text in srv.log() and srv.log(), 5, what="%r in the error log" % text))


# -- static files -----------------------------------------------------------------

@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_files_come_with_type_validators_and_the_access_log(serve, tree, worker):
    srv = static_server(serve, tree, worker)
    status, headers, body = srv.get("/s/style.css")
    assert status == 200 and body == (SITE / "style.css").read_bytes()
    assert headers["content-type"].startswith("text/css")
    assert headers["content-length"] == str(len(body))
    assert headers["etag"].startswith('"') and headers["last-modified"].endswith(" GMT")
    assert headers["accept-ranges"] == "bytes"
    assert "access-control-allow-origin" not in headers and "cache-control" not in headers
    status, headers, body = srv.get("/s/logo.png")
    assert status == 200 and headers["content-type"] == "image/png" and body.startswith(b"\x89PNG")
    assert srv.get("/cgi-bin/env.sh")[0] == 200   # the scripts beside them are untouched
    wait_until(lambda: "GET /s/style.css" in srv.accesslog.read_text(), 5, what="the access-log line")


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_not_modified_by_etag_or_date(serve, tree, worker):
    srv = static_server(serve, tree, worker)
    _, headers, _ = srv.get("/s/style.css")
    etag, modified = headers["etag"], headers["last-modified"]
    status, again, body = srv.get("/s/style.css", headers={"If-None-Match": etag})
    assert (status, body, again["etag"]) == (304, b"", etag)
    assert srv.get("/s/style.css", headers={"If-None-Match": 'W/"x", ' + etag})[0] == 304  # a list, weakly
    assert srv.get("/s/style.css", headers={"If-Modified-Since": modified})[0] == 304
    assert srv.get("/s/style.css", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"})[0] == 200
    assert srv.get("/s/style.css", headers={"If-None-Match": '"other"'})[0] == 200
    assert srv.get("/s/style.css", headers={"If-Match": '"other"'})[0] == 412


def test_head_has_the_headers_and_no_body(serve, tree):
    srv = static_server(serve, tree)
    status, headers, body = srv.request("HEAD", "/s/app.js")
    assert (status, body) == (200, b"")
    assert headers["content-length"] == str((SITE / "app.js").stat().st_size)
    assert headers["content-type"].startswith("text/javascript")


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_ranges(serve, tree, worker):
    srv = static_server(serve, tree, worker)
    data = (SITE / "style.css").read_bytes()
    size = len(data)

    def ranged(spec: str, **more: str) -> tuple[int, dict, bytes]:
        return srv.get("/s/style.css", headers={"Range": spec, **more})

    status, headers, body = ranged("bytes=0-0")     # one byte: WhiteNoise 6.12 answers 416
    assert (status, body, headers["content-range"]) == (206, data[:1], "bytes 0-0/%d" % size)
    status, headers, body = ranged("bytes=3-7")
    assert (status, body, headers["content-length"]) == (206, data[3:8], "5")
    assert ranged("bytes=-5")[2] == data[-5:]
    status, headers, _ = ranged("bytes=%d-" % (size + 10))
    assert (status, headers["content-range"]) == (416, "bytes */%d" % size)
    assert ranged("bytes=oops")[:3:2] == (200, data)           # unreadable: the whole file
    etag = srv.get("/s/style.css")[1]["etag"]
    assert ranged("bytes=0-3", **{"If-Range": etag})[0] == 206
    assert ranged("bytes=0-3", **{"If-Range": '"an-older-version"'})[:3:2] == (200, data)
    status, headers, body = srv.request("HEAD", "/s/style.css", headers={"Range": "bytes=0-3"})
    assert (status, body, headers["content-length"]) == (206, b"", "4")


def test_no_way_out_of_the_directory(serve, tree):
    srv = static_server(serve, tree)
    cases = {
        "/s/../secret.txt": 404,            # it is /secret.txt, which no alias maps
        "/s/%2e%2e/secret.txt": 404,
        "/s/docs/%2E%2E/%2e%2e/secret.txt": 404,
        "/s/../../../../../etc/passwd": 400,  # above the root
        "/s/..%2fsecret.txt": 404,          # encoded slashes: AllowEncodedSlashes Off
        "/s/a%2fb": 404,
        "/s/docs%2freadme.txt": 404,
        "/s/..%5csecret.txt": 404,
        "/s/leak.txt": 403,                 # a link to a file outside
        "/s/outdir/secret.txt": 403,        # through a link to a directory outside
        "/s/outdir": 403,
    }
    for path, expected in cases.items():
        status, _, body = srv.get(path)
        assert (path, status) == (path, expected)
        assert SECRET not in body and b"root:" not in body
    status, _, body = srv.get("/s/inside.css")   # a link that stays inside is followed
    assert (status, body) == (200, (SITE / "style.css").read_bytes())
    assert srv.get("/s/docs/../style.css")[0] == 200   # dot segments resolved inside the alias
    logged(srv, "AH00037: Symbolic link not allowed")


def test_missing_file_and_directories(serve, tree):
    srv = static_server(serve, tree)
    assert srv.get("/s/nothing-here.css")[0] == 404
    assert srv.get("/s/style.css/more")[0] == 404
    for path in ("/s/docs", "/s/docs/", "/s/"):
        status, headers, body = srv.get(path)
        assert status == 403 and body.startswith(ERROR_PAGE) and b"readme" not in body, path
    logged(srv, "AH01276: Cannot serve directory")


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_precompressed_variants(serve, tree, worker):
    site, _ = tree
    (site / "app.js.br").write_bytes(b"stands for a brotli stream; the server never decodes it")
    srv = static_server(serve, tree, worker)
    data = (SITE / "app.js").read_bytes()
    status, headers, body = srv.get("/s/app.js", headers={"Accept-Encoding": "gzip"})
    assert (status, headers["content-encoding"], headers["vary"]) == (200, "gzip", "Accept-Encoding")
    assert gzip.decompress(body) == data
    status, headers, body = srv.get("/s/app.js", headers={"Accept-Encoding": "gzip, br"})
    assert headers["content-encoding"] in ("gzip", "br") and len(body) < len(data)
    assert srv.get("/s/app.js", headers={"Accept-Encoding": "br"})[2] == (site / "app.js.br").read_bytes()
    for refused in ("identity", "gzip;q=0", ""):
        status, headers, body = srv.get("/s/app.js", headers={"Accept-Encoding": refused})
        assert (status, body, "content-encoding" in headers) == (200, data, False), refused
    assert srv.get("/s/app.js.gz")[0] == 404   # a variant is not a URL of its own


def test_files_that_appear_change_or_go_after_start(serve, tree):
    site, _ = tree
    srv = static_server(serve, tree)
    assert srv.get("/s/late.txt")[0] == 404
    (site / "late.txt").write_bytes(b"created after start-up\n")
    (site / "newdir").mkdir()
    (site / "newdir" / "deep.css").write_bytes(b"a{}\n")
    status, headers, body = srv.get("/s/late.txt")
    assert (status, body, headers["content-length"]) == (200, b"created after start-up\n", "23")
    assert srv.get("/s/newdir/deep.css")[2] == b"a{}\n"
    (site / "late.txt").write_bytes(b"changed, and longer than before\n")
    status, headers, body = srv.get("/s/late.txt")
    assert (body, headers["content-length"]) == (b"changed, and longer than before\n", "32")
    (site / "late.txt").unlink()
    assert srv.get("/s/late.txt")[0] == 404


def test_other_methods_are_405_with_allow(serve, tree):
    srv = static_server(serve, tree)
    for method, path in (("POST", "/s/style.css"), ("PUT", "/s/new.css"), ("DELETE", "/s/style.css"),
                         ("OPTIONS", "/s/"), ("TRACE", "/s/style.css")):
        status, headers, _ = srv.request(method, path, body=b"x" if method in ("POST", "PUT") else None)
        assert (status, headers.get("allow")) == (405, "GET, HEAD"), (method, path)
    assert (SITE / "style.css").read_bytes() == (tree[0] / "style.css").read_bytes()


# -- X-Sendfile --------------------------------------------------------------------

@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_sendfile_sends_the_file_with_the_script_headers(serve, tree, worker):
    _, files = tree
    srv = static_server(serve, tree, worker)
    report = files / "report.csv"
    data = report.read_bytes()
    status, headers, body = srv.get("/dl/sendfile.sh?%s" % report)
    assert (status, headers["_reason"], body) == (200, "File Follows", data)
    assert headers["content-disposition"] == 'attachment; filename="report.csv"'
    assert headers["content-type"].startswith("text/csv")            # guessed from the name
    assert headers["content-length"] == str(len(data)) and "x-sendfile" not in headers
    assert srv.get("/dl/sendfile.sh?%s&typed" % report)[1]["content-type"] == "application/x-report"
    status, headers, body = srv.get("/dl/sendfile.sh?%s" % report, headers={"Range": "bytes=0-1"})
    assert (status, body, headers["content-range"]) == (206, b"id", "bytes 0-1/%d" % len(data))
    assert headers["content-disposition"] == 'attachment; filename="report.csv"'
    etag = srv.get("/dl/sendfile.sh?%s" % report)[1]["etag"]
    assert srv.get("/dl/sendfile.sh?%s" % report, headers={"If-None-Match": etag})[:3:2] == (304, b"")
    assert srv.request("HEAD", "/dl/sendfile.sh?%s" % report)[::2] == (200, b"")


def test_sendfile_outside_the_allowed_directories_is_refused_and_logged(serve, tree):
    _, files = tree
    srv = static_server(serve, tree)
    for target in ("/etc/passwd", "%s/../secret.txt" % files, str(files), "%s/missing.csv" % files):
        status, headers, body = srv.get("/dl/sendfile.sh?%s" % target)
        assert status == 500 and body.startswith(ERROR_PAGE), target
        assert SECRET not in body and b"root:" not in body and "content-disposition" not in headers
    log = logged(srv, "missing.csv")
    assert "X-Sendfile from %s" % (CGI_BIN / "sendfile.sh") in log and "'/etc/passwd'" in log


def test_sendfile_from_a_location_without_x_sendfile_is_dropped(serve, tree):
    _, files = tree
    srv = static_server(serve, tree)
    status, headers, body = srv.get("/cgi-bin/sendfile.sh?%s" % (files / "report.csv"))
    assert (status, body) == (200, b"the script body, not the file\n")
    assert "x-sendfile" not in headers and headers["content-disposition"].startswith("attachment")
