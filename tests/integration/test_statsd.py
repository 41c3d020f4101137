"""statsd: with gunicorn's statsd_host set, CGI spawns, exits and timings are sent."""

from __future__ import annotations

import socket
import time

from .conftest import wait_until


def test_cgi_metrics_reach_statsd(serve):
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(0.2)
    port = collector.getsockname()[1]
    received: list[str] = []

    def drain() -> None:
        while True:
            try:
                received.append(collector.recv(65536).decode())
            except TimeoutError:
                return

    try:
        srv = serve("gthread", statsd_host="127.0.0.1:%d" % port, statsd_prefix="t")
        assert srv.get("/cgi-bin/env.sh")[0] == 200
        assert srv.get("/cgi-bin/exit7.sh")[0] == 200
        deadline = time.monotonic() + 10

        def seen() -> bool:
            drain()
            text = "\n".join(received)
            # gunicorn joins prefix and name without a dot.
            return all(m in text for m in ("tcgi.spawns:1|c", "tcgi.exits.ok:1|c", "tcgi.exits.error:1|c",
                                           "tcgi.spawn_latency:", "tcgi.duration:", "tcgi.running:+1|g",
                                           "tcgi.running:-1|g"))
        wait_until(seen, deadline - time.monotonic(), what="the CGI metrics")
    finally:
        collector.close()
