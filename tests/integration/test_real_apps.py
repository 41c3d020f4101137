"""Real CGI applications behind gunicorn-cgid, driven by real clients.

``git http-backend`` (clone and a chunked push with the ``git`` client),
PHP through ``php-cgi`` (forms, uploads, CGI variables, Status, cookies) and
``curl`` against the echo script. Skipped where the programs are missing.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from .conftest import CGI_BIN

APPS = Path(__file__).resolve().parent.parent / "apps"
PHP_DIR = APPS / "php"
GIT_HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
PHP_CGI = "/usr/bin/php-cgi"
WORKERS = ["gthread", "gevent"]
MIB = 1024 * 1024
COMMITS = 300

needs_git = pytest.mark.skipif(
    shutil.which("git") is None or not os.access(GIT_HTTP_BACKEND, os.X_OK),
    reason="git and %s are needed" % GIT_HTTP_BACKEND)
needs_php = pytest.mark.skipif(not os.access(PHP_CGI, os.X_OK), reason="%s is needed" % PHP_CGI)
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is needed")

PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment for git and curl that ignores the user's config and any proxy."""
    env = {k: v for k, v in os.environ.items() if k not in PROXY_VARS and not k.startswith("GIT_")}
    env.update({
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "Test Author",
        "GIT_AUTHOR_EMAIL": "author@example.com",
        "GIT_COMMITTER_NAME": "Test Committer",
        "GIT_COMMITTER_EMAIL": "committer@example.com",
        "NO_PROXY": "*",
        "no_proxy": "*",
    })
    env.update(extra)
    return env


def run(args: list[str], env: dict[str, str], cwd: Path | None = None, input: bytes | None = None,
        check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, input=input, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError("%s exited with %d\nstdout: %s\nstderr: %s" % (
            args, proc.returncode, proc.stdout.decode(errors="replace")[-3000:],
            proc.stderr.decode(errors="replace")[-3000:]))
    return proc


def fast_import_stream(count: int) -> bytes:
    """A ``git fast-import`` stream of ``count`` linear commits on refs/heads/main."""
    parts = []
    for i in range(1, count + 1):
        message = b"commit number %d\n" % i
        content = b"".join(b"line %d\n" % n for n in range(i % 50 + 1)) + b"commit %d\n" % i
        parts.append(b"commit refs/heads/main\nmark :%d\n" % i)
        parts.append(b"committer Test Committer <committer@example.com> %d +0000\n" % (1700000000 + i))
        parts.append(b"data %d\n%s" % (len(message), message))
        parts.append(b"M 100644 inline file.txt\ndata %d\n%s\n" % (len(content), content))
        small = b"%d\n" % i
        parts.append(b"M 100644 inline dir/n%d.txt\ndata %d\n%s\n" % (i % 7, len(small), small))
    return b"".join(parts)


def make_bare_repo(path: Path, env: dict[str, str], commits: int) -> str:
    run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)], env)
    run(["git", "fast-import", "--quiet"], env, cwd=path, input=fast_import_stream(commits))
    return run(["git", "rev-parse", "main"], env, cwd=path).stdout.decode().strip()


def access_log_lines(srv, needle: str) -> list[str]:
    return [line for line in srv.accesslog.read_text(errors="replace").splitlines() if needle in line]


@needs_git
@pytest.mark.parametrize("worker", WORKERS)
def test_git_http_backend_clone_and_chunked_push(serve, worker, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = client_env(home)
    projects = tmp_path / "projects"
    projects.mkdir()
    bare = projects / "repo.git"
    head = make_bare_repo(bare, env, COMMITS)

    srv = serve(worker, script_alias={"/git/": GIT_HTTP_BACKEND},
                cgi_env={"GIT_PROJECT_ROOT": str(projects), "GIT_HTTP_EXPORT_ALL": "1"})
    url = "http://127.0.0.1:%d/git/repo.git" % srv.port

    # Clone with protocol v2 and with the original protocol (whose upload-pack
    # requests the client gzips): both must give the whole history.
    for version in ("2", "0"):
        dest = tmp_path / ("clone-v" + version)
        run(["git", "-c", "protocol.version=" + version, "clone", "--quiet", url, str(dest)], env)
        log = run(["git", "log", "--oneline"], env, cwd=dest).stdout.decode().splitlines()
        assert len(log) == COMMITS, (version, len(log), srv.log())
        assert run(["git", "rev-parse", "HEAD"], env, cwd=dest).stdout.decode().strip() == head
        assert (dest / "file.txt").read_bytes().endswith(b"commit %d\n" % COMMITS)
    assert access_log_lines(srv, '"GET /git/repo.git/info/refs?service=git-upload-pack HTTP/1.1" 200')
    assert access_log_lines(srv, '"POST /git/repo.git/git-upload-pack HTTP/1.1" 200')

    work = tmp_path / "clone-v2"
    blob_data = os.urandom(3 * MIB)
    (work / "big.bin").write_bytes(blob_data)
    run(["git", "add", "big.bin"], env, cwd=work)
    run(["git", "commit", "--quiet", "-m", "add a large incompressible blob"], env, cwd=work)
    commit = run(["git", "rev-parse", "HEAD"], env, cwd=work).stdout.decode().strip()
    blob = run(["git", "rev-parse", "HEAD:big.bin"], env, cwd=work).stdout.decode().strip()
    assert blob == hashlib.sha1(b"blob %d\0" % len(blob_data) + blob_data).hexdigest()

    # Without http.receivepack, git-http-backend refuses an anonymous push (403).
    refused = run(["git", "push", "--quiet", "origin", "HEAD:main"], env, cwd=work, check=False)
    assert refused.returncode != 0
    assert b"403" in refused.stderr, refused.stderr
    assert access_log_lines(srv, '"GET /git/repo.git/info/refs?service=git-receive-pack HTTP/1.1" 403')

    run(["git", "config", "http.receivepack", "true"], env, cwd=bare)
    trace = tmp_path / "curl-trace.txt"
    push_env = client_env(home, GIT_TRACE_CURL=str(trace), GIT_TRACE_CURL_NO_DATA="1")
    run(["git", "push", "--quiet", "origin", "HEAD:main"], push_env, cwd=work)

    assert run(["git", "rev-parse", "main"], env, cwd=bare).stdout.decode().strip() == commit
    run(["git", "cat-file", "-e", commit], env, cwd=bare)
    run(["git", "cat-file", "-e", blob], env, cwd=bare)
    stored = run(["git", "cat-file", "blob", blob], env, cwd=bare).stdout
    assert stored == blob_data

    # The pack (> http.postBuffer) went up as a chunked request body.
    sent = trace.read_text(errors="replace")
    posts = re.split(r"=> Send header: (?=POST )", sent)[1:]
    pack_posts = [p for p in posts if p.startswith("POST /git/repo.git/git-receive-pack ")]
    assert pack_posts, sent[-3000:]
    assert any(re.search(r"=> Send header: Transfer-Encoding: chunked", p.split("<= Recv header")[0])
               for p in pack_posts), sent[-3000:]
    assert access_log_lines(srv, '"POST /git/repo.git/git-receive-pack HTTP/1.1" 200')


# --- PHP through php-cgi ---------------------------------------------------------------------


def php_server(serve, worker):
    return serve(worker, script_alias={"/php/": str(PHP_DIR) + "/"},
                 cgi_interpreters={".php": PHP_CGI})


def json_body(status: int, body: bytes, srv) -> dict:
    assert status == 200, (status, body[:2000], srv.log())
    try:
        return json.loads(body)
    except ValueError:
        raise AssertionError("not JSON: %r\n%s" % (body[:2000], srv.log())) from None


@needs_php
@pytest.mark.parametrize("worker", WORKERS)
def test_php_form_post_and_cgi_variables(serve, worker):
    srv = php_server(serve, worker)
    form = "name=J%C3%BCrgen+M&list%5B%5D=a&list%5B%5D=b&empty=&amp=%26%3D"
    status, headers, body = srv.request(
        "POST", "/php/form.php/extra/path?q=1&tag%5B%5D=x&tag%5B%5D=y&sp=a%20b", body=form.encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    data = json_body(status, body, srv)
    assert headers["content-type"].startswith("application/json")
    assert data["post"] == {"name": "J\u00fcrgen M", "list": ["a", "b"], "empty": "", "amp": "&="}
    assert data["get"] == {"q": "1", "tag": ["x", "y"], "sp": "a b"}
    server = data["server"]
    assert server["SCRIPT_FILENAME"] == str(PHP_DIR / "form.php")
    assert server["SCRIPT_NAME"] == "/php/form.php"
    assert server["PATH_INFO"] == "/extra/path"
    assert server["PHP_SELF"] == "/php/form.php/extra/path"
    assert server["REQUEST_URI"] == "/php/form.php/extra/path?q=1&tag%5B%5D=x&tag%5B%5D=y&sp=a%20b"
    assert server["QUERY_STRING"] == "q=1&tag%5B%5D=x&tag%5B%5D=y&sp=a%20b"
    assert server["REQUEST_METHOD"] == "POST"
    assert server["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert server["CONTENT_LENGTH"] == str(len(form))
    assert server["REDIRECT_STATUS"] == "200"
    assert server["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert server["SERVER_PORT"] == str(srv.port)

    # A plain GET without extra path: no PATH_INFO, empty $_POST.
    status, _, body = srv.get("/php/form.php?only=get")
    data = json_body(status, body, srv)
    assert data["get"] == {"only": "get"} and data["post"] == []
    assert data["server"]["PATH_INFO"] is None
    assert data["server"]["REQUEST_URI"] == "/php/form.php?only=get"
    assert data["server"]["SCRIPT_NAME"] == "/php/form.php"


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = "----cgid-" + uuid.uuid4().hex
    out = []
    for name, value in fields.items():
        out.append(b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                   % (boundary.encode(), name.encode(), value.encode()))
    for name, (filename, content) in files.items():
        out.append(b"--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                   b"Content-Type: application/octet-stream\r\n\r\n"
                   % (boundary.encode(), name.encode(), filename.encode()))
        out.append(content + b"\r\n")
    out.append(b"--%s--\r\n" % boundary.encode())
    return "multipart/form-data; boundary=" + boundary, b"".join(out)


@needs_php
@pytest.mark.parametrize("worker", WORKERS)
def test_php_multipart_upload(serve, worker, tmp_path):
    srv = php_server(serve, worker)
    first = os.urandom(MIB + 12345)
    second = os.urandom(200_000)
    ctype, body = multipart({"comment": "two files"},
                            {"upload": ("first.bin", first), "other": ("second.dat", second)})
    status, _, resp = srv.request("POST", "/php/upload.php", body=body, headers={"Content-Type": ctype})
    data = json_body(status, resp, srv)
    assert data["post"] == {"comment": "two files"}
    assert data["files"] == {
        "upload": {"name": "first.bin", "size": len(first), "error": 0, "md5": hashlib.md5(first).hexdigest()},
        "other": {"name": "second.dat", "size": len(second), "error": 0, "md5": hashlib.md5(second).hexdigest()},
    }

    if shutil.which("curl") is None:
        return
    path = tmp_path / "curl upload.bin"
    path.write_bytes(first)
    proc = run(["curl", "-sS", "--noproxy", "*", "-F", "upload=@%s;filename=from-curl.bin" % path,
                "-F", "comment=by curl", "-w", "\n%{http_code}",
                "http://127.0.0.1:%d/php/upload.php" % srv.port], client_env(tmp_path))
    resp, _, code = proc.stdout.rpartition(b"\n")
    data = json_body(int(code), resp, srv)
    assert data["post"] == {"comment": "by curl"}
    assert data["files"] == {
        "upload": {"name": "from-curl.bin", "size": len(first), "error": 0,
                   "md5": hashlib.md5(first).hexdigest()},
    }


@needs_php
@pytest.mark.parametrize("worker", WORKERS)
def test_php_status_header_and_two_cookies(serve, worker):
    srv = php_server(serve, worker)
    status, headers, body = srv.get("/php/status.php")
    assert status == 404, (status, headers, body, srv.log())
    assert headers["_reason"] == "Not Found"
    assert body == b"no such thing\n"
    assert "location" not in headers

    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    try:
        conn.request("GET", "/php/cookies.php")
        resp = conn.getresponse()
        content = resp.read()
        cookies = [v for k, v in resp.getheaders() if k.lower() == "set-cookie"]
    finally:
        conn.close()
    assert resp.status == 200, (resp.status, content, srv.log())
    assert content == b"cookies set\n"
    assert len(cookies) == 2, cookies
    assert cookies[0] == "first=one"
    assert cookies[1].startswith("second=two; ")
    assert "path=/php/" in cookies[1] and "HttpOnly" in cookies[1]


# --- curl ------------------------------------------------------------------------------------


@needs_curl
@pytest.mark.parametrize("worker", WORKERS)
def test_curl_get_and_chunked_post(serve, worker, tmp_path):
    srv = serve(worker)
    env = client_env(tmp_path)
    base = "http://127.0.0.1:%d/cgi-bin/" % srv.port

    proc = run(["curl", "-sS", "--noproxy", "*", "-D", "-", base + "env.sh/p/q?a=1&b=%20c"], env)
    head, _, body = proc.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), proc.stdout[:2000]
    lines = body.decode().splitlines()
    assert "SCRIPT_NAME=/cgi-bin/env.sh" in lines
    assert "PATH_INFO=/p/q" in lines
    assert "QUERY_STRING=a=1&b=%20c" in lines
    assert "SCRIPT_FILENAME=%s" % (CGI_BIN / "env.sh") in lines
    assert "HTTP_USER_AGENT=curl/" in body.decode()

    payload = os.urandom(3 * MIB)
    src = tmp_path / "payload.bin"
    src.write_bytes(payload)
    out = tmp_path / "echoed.bin"
    proc = run(["curl", "-sS", "-v", "--noproxy", "*", "--data-binary", "@%s" % src,
                "-H", "Transfer-Encoding: chunked", "-H", "Content-Type: application/octet-stream",
                "-o", str(out), "-w", "%{http_code}", base + "echo.py"], env)
    assert proc.stdout == b"200", (proc.stdout, proc.stderr[-2000:], srv.log())
    assert b"> Transfer-Encoding: chunked" in proc.stderr
    assert b"> Content-Length" not in proc.stderr
    echoed = out.read_bytes()
    assert len(echoed) == len(payload)
    assert echoed == payload
