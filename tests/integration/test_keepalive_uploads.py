"""Uploads on keep-alive connections: the next request on the connection is never cut or misread."""

from __future__ import annotations

import http.client
import threading

import pytest

from .conftest import WORKERS

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("worker", WORKERS)
def test_concurrent_uploads_on_kept_alive_connections(serve, worker):
    srv = serve(worker, keepalive=30)
    body = b"u" * (1024 * 1024)
    outcomes: list[object] = []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            for _ in range(8):
                conn.request("POST", "/cgi-bin/readall.sh", body=body)
                resp = conn.getresponse()
                got: object = (resp.status, resp.read().strip())
                with lock:
                    outcomes.append(got)
        except Exception as exc:  # recorded: the assertion below shows it
            with lock:
                outcomes.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert outcomes == [(200, b"1048576")] * 32, [o for o in outcomes if o != (200, b"1048576")][:5]
    assert "shorter than its Content-Length" not in srv.log()
