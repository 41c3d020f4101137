"""readiness.ready_now: the original poll's answer, without a wait, under gthread and under gevent."""

from __future__ import annotations

import select
import socket
import subprocess
import sys
import textwrap

from gunicorn_cgid.worker import readiness


def test_ready_now_tells_data_hang_up_and_nothing():
    a, b = socket.socketpair()
    with a, b:
        assert readiness.ready_now([a.fileno()], select.POLLIN) == []
        b.send(b"x")
        assert readiness.ready_now([a.fileno()], select.POLLIN) == [(a.fileno(), select.POLLIN)]
        b.close()
        ((fd, events),) = readiness.ready_now([a.fileno()], select.POLLIN)
        assert fd == a.fileno() and events & select.POLLHUP and events & select.POLLIN


def test_under_gevent_it_is_the_original_poll_and_keeps_pollhup():
    """gevent's poll reports no POLLHUP and sets up watchers; the answer here must be the kernel's."""
    code = textwrap.dedent("""
        from gevent import monkey
        monkey.patch_all()
        import select, socket
        from gunicorn_cgid.worker import readiness
        assert readiness.cooperative()
        a, b = socket.socketpair()
        b.send(b"x")
        b.close()
        ((fd, events),) = readiness.ready_now([a.fileno()], select.POLLIN)
        assert events & select.POLLHUP, events
        assert readiness._original is monkey.get_original("select", "poll")
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr


def test_without_gevent_it_is_not_cooperative():
    assert not readiness.cooperative()
