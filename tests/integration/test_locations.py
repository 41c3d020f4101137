"""Per-location settings on a real server: two locations, two environments, one server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import CGI_BIN

pytestmark = pytest.mark.timeout(60)


def two_git_roots() -> dict:
    return {
        "/a/": {"path": str(CGI_BIN) + "/", "env": {"GIT_PROJECT_ROOT": "/srv/git-a"}},
        "/b/": {"path": str(CGI_BIN) + "/", "env": {"GIT_PROJECT_ROOT": "/srv/git-b"},
                "timeout": 1, "limit_request_body": 10},
    }


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_two_locations_two_environments(serve, worker):
    srv = serve(worker, script_alias=two_git_roots(), cgi_env={"SHARED": "yes", "CGID_TEST_MARKER": "m"})
    _, _, a = srv.get("/a/env.sh")
    _, _, b = srv.get("/b/env.sh")
    assert b"GIT_PROJECT_ROOT=/srv/git-a\n" in a and b"GIT_PROJECT_ROOT=/srv/git-b\n" in b
    assert b"SHARED=yes\n" in a and b"SHARED=yes\n" in b
    assert b"CONTEXT_PREFIX=/a/\n" in a


def test_per_location_timeout_and_body_limit(serve):
    srv = serve("gthread", script_alias=two_git_roots())
    assert srv.get("/b/sleep.sh?3")[0] == 504       # /b/ has a 1 s idle timeout
    assert srv.get("/a/sleep.sh?2")[0] == 200       # the global 60 s holds for /a/
    assert srv.request("POST", "/b/env.sh", body=b"x" * 11)[0] == 413
    assert srv.request("POST", "/a/env.sh", body=b"x" * 11)[0] == 200


def test_an_unknown_key_stops_the_start_naming_it(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from gunicorn_cgid.hooks import *\nbind = '127.0.0.1:0'\n"
                    "script_alias = {'/x/': {'path': 'cgi-bin/', 'evn': {'A': '1'}}}\n")
    result = subprocess.run([sys.executable, "-m", "gunicorn", "-c", str(conf), "gunicorn_cgid:app"],
                            cwd=str(tmp_path), capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "unknown key" in result.stdout + result.stderr and "'evn'" in result.stdout + result.stderr
