"""HTTP/2 from a trusted proxy (h2c, prior knowledge): CGI, NPH and cut responses.

gunicorn 27 serves HTTP/2 with ``http_protocols = "h2,h1"``; curl speaks it
with ``--http2-prior-knowledge``.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import wait_until

pytest.importorskip("h2", reason="gunicorn's HTTP/2 needs the h2 package (gunicorn[http2])")
pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")]

H2 = {"http_protocols": "h2,h1", "http2_cleartext": "prior-knowledge", "forwarded_allow_ips": "127.0.0.1"}


def curl(srv, path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-D", "-", "--max-time", "20", *args,
                           "http://127.0.0.1:%d%s" % (srv.port, path)], capture_output=True, timeout=30)


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_scripts_over_h2c(serve, worker):
    srv = serve(worker, **H2)
    out = curl(srv, "/cgi-bin/env.sh?a=b", "-H", "X-Twice: 1", "-H", "X-Twice: 2")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(b"HTTP/2 200"), out.stdout[:200]
    assert b"SERVER_PROTOCOL=HTTP/2.0\n" in out.stdout and b"QUERY_STRING=a=b\n" in out.stdout
    assert b"HTTP_X_TWICE=1, 2\n" in out.stdout
    posted = curl(srv, "/cgi-bin/echo.py", "--data-binary", "x" * 100_000)
    assert posted.returncode == 0 and posted.stdout.endswith(b"x" * 100_000)


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_nph_over_h2c_is_relayed_as_an_ordinary_response(serve, worker):
    srv = serve(worker, **H2)
    out = curl(srv, "/cgi-bin/nph-test.sh")
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200"), head
    assert b"x-raw: yes" in head.lower() and body == b"ok\n"
    assert "Traceback" not in srv.log()


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_a_cut_response_resets_the_stream(serve, worker):
    srv = serve(worker, cgi_max_runtime=1, **H2)
    out = curl(srv, "/cgi-bin/life-drip.sh?60")
    assert out.stdout.startswith(b"HTTP/2 200") and b"tick 1" in out.stdout
    assert out.returncode != 0, "curl took a cut response for a whole one"
    wait_until(lambda: "killed before it finished its output" in srv.log(), what="the cut line")
    assert "Traceback" not in srv.log()
    # The connection's other streams are unaffected: a new request works.
    assert curl(srv, "/cgi-bin/life-ok.sh").returncode == 0
