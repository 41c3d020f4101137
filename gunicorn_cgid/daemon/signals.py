"""Signals as readable events, for the supervisor's and the daemon's select loops.

Runs in the supervisor and the daemon. Handlers only let Python's wakeup
socket fire (the signal numbers arrive as bytes on it), so all the work
happens in the loop, never inside a handler.
"""

from __future__ import annotations

import signal
import socket

HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class SignalWakeup:
    """A socket that becomes readable when one of ``HANDLED`` arrives."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        for sock in (self.reader, self.writer):
            sock.setblocking(False)

    def install(self) -> None:
        signal.set_wakeup_fd(self.writer.fileno(), warn_on_full_buffer=False)
        for sig in HANDLED:
            signal.signal(sig, _noop)

    def received(self) -> set[int]:
        """The signals that arrived since the last call."""
        try:
            return set(self.reader.recv(4096))
        except BlockingIOError:
            return set()

    def close(self) -> None:
        """In a forked child that has its own: restore defaults and drop ours."""
        for sig in HANDLED:
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        self.reader.close()
        self.writer.close()


def _noop(signum: int, frame: object) -> None:
    """The wakeup socket carries the signal; the handler only lets it fire."""
