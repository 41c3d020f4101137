"""Kept ScriptSock connections: one worker thread serves many requests over one daemon connection.

Seen from outside through /proc/net/unix, which lists the daemon's accepted
connections under the ScriptSock's path: with one worker and one thread,
every request of a row goes over the same connection (the same inode), and
after the daemon is killed the next request is served (the kept connection
is found closed and a new one made) and the new connection is kept in turn.
"""

from __future__ import annotations

import os
import signal

import pytest

from .conftest import Server, wait_until

WORKERS = ["gthread", "gevent"]
OK = "/cgi-bin/life-ok.sh"
_CONNECTED = "03"  # /proc/net/unix St column: SS_CONNECTED


def daemon_connections(srv: Server) -> set[int]:
    """Inodes of the daemon's connected sockets on this server's ScriptSock."""
    path = str(srv.root / "run" / ("cgisock.%d" % srv.pid))
    found = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and fields[5] == _CONNECTED:
                found.add(int(fields[6]))
    return found


def one_connection(srv: Server) -> int:
    """The single connection the daemon holds once the last request is over."""
    conns = wait_until(lambda: (lambda c: c if len(c) == 1 else None)(daemon_connections(srv)), 5,
                       what="one kept connection (now %s)" % daemon_connections(srv))
    return next(iter(conns))  # type: ignore[call-overload]


@pytest.mark.parametrize("worker", WORKERS)
def test_one_thread_serves_many_requests_over_one_connection_and_survives_a_restart(serve, worker):
    srv = serve(worker, workers=1, threads=1)
    assert srv.get(OK)[0] == 200
    first = one_connection(srv)
    for _ in range(20):
        status, _, body = srv.get(OK)
        assert (status, body) == (200, b"ok\n")
        assert daemon_connections(srv) == {first}

    old = srv.daemon_pid()
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: (lambda d: d if d and d != old else None)(_daemon(srv)), 10, what="a new daemon")
    status, _, body = srv.get(OK)
    assert (status, body) == (200, b"ok\n"), srv.log()[-3000:]
    second = one_connection(srv)
    assert second != first
    for _ in range(5):
        assert srv.get(OK)[0] == 200
        assert daemon_connections(srv) == {second}
    assert "Traceback" not in srv.log()


def test_a_stopping_daemon_closes_kept_connections_and_no_request_is_lost(serve):
    # A daemon told to stop (SIGTERM, as for a replacement) closes the kept
    # connections at once; the worker connects again, waits in the backlog
    # and is served by the next daemon.
    srv = serve("gthread", workers=1, threads=1)
    assert srv.get(OK)[0] == 200
    first = one_connection(srv)
    old = srv.daemon_pid()
    os.kill(old, signal.SIGTERM)
    wait_until(lambda: first not in daemon_connections(srv), 5, what="the kept connection to be closed")
    wait_until(lambda: (lambda d: d if d and d != old else None)(_daemon(srv)), 10, what="a new daemon")
    for _ in range(5):
        status, _, body = srv.get(OK)
        assert (status, body) == (200, b"ok\n"), srv.log()[-3000:]
    assert first not in daemon_connections(srv)
    assert len(daemon_connections(srv)) == 1


def _daemon(srv: Server) -> int:
    try:
        return srv.daemon_pid()
    except (AssertionError, OSError):
        return 0
