"""The health endpoint answers for the daemon side, not just for an open port."""

from __future__ import annotations

import os
import signal

import pytest

from .conftest import wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("worker", ["gthread", "gevent"])
def test_health_follows_the_daemon(serve, worker):
    srv = serve(worker, health_path="/healthz")
    status, headers, body = srv.get("/healthz")
    assert status == 200 and body.startswith(b"ok: CGI daemon"), body
    assert headers.get("cache-control") == "no-store"
    daemon = srv.daemon_pid()
    os.kill(daemon, signal.SIGSTOP)  # alive but not answering: what a probe must catch
    try:
        status, headers, body = srv.get("/healthz", timeout=10)
        assert status == 503 and b"did not answer" in body, body
        assert headers.get("retry-after") == "1"
    finally:
        os.kill(daemon, signal.SIGCONT)
    wait_until(lambda: srv.get("/healthz")[0] == 200, 10, what="health to come back")
    log = srv.log()
    failed = [ln for ln in log.splitlines() if "health check failed" in ln]
    assert failed and all("[INFO]" in ln for ln in failed), failed


def test_health_path_is_not_a_script(serve):
    srv = serve("gthread", health_path="/cgi-bin/env.sh")
    status, _, body = srv.get("/cgi-bin/env.sh")
    assert status == 200 and body.startswith(b"ok: "), body
