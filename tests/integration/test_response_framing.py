"""Short responses go out in one piece with Content-Length; long or slow ones stream."""

from __future__ import annotations

import pytest

from .conftest import WORKERS

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("worker", WORKERS)
def test_a_short_answer_has_its_length_and_a_slow_one_is_chunked(serve, worker):
    srv = serve(worker)
    status, headers, body = srv.get("/cgi-bin/life-ok.sh")
    assert (status, body) == (200, b"ok\n")
    assert headers.get("content-length") == "3" and "transfer-encoding" not in headers
    status, headers, body = srv.get("/cgi-bin/slow-lines.sh")
    assert (status, body) == (200, b"line 1\nline 2\nline 3\n")
    assert headers.get("transfer-encoding") == "chunked" and "content-length" not in headers


def test_a_large_answer_streams(serve):
    srv = serve("gthread")
    status, headers, body = srv.get("/cgi-bin/big.py")
    assert status == 200 and len(body) > 65536
    assert headers.get("transfer-encoding") == "chunked"
