"""A worker-like peer for tests that talk to the ScriptSock themselves.

The daemon accepts only connections made by a child of gunicorn's master (a
worker). Tests that speak the protocol directly therefore ask a small helper
that the master forks in ``when_ready`` (the *broker*, a sibling of the
workers) to connect for them: it connects, and hands the connected socket
over with SCM_RIGHTS. The kernel records the peer at connect(), so the
daemon sees the broker, and the test then owns the connection.

Use it by overriding the ``serve`` fixture in a test module::

    serve = workerlike.serve_fixture()

and ``workerlike.connect(srv)`` in place of a plain connect.
"""

from __future__ import annotations

import array
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from gunicorn_cgid import wire

from . import conftest

BROKER_NAME = "broker.sock"

# Appended to the test's gunicorn.conf.py: runs in the master once it is ready.
BROKER_HOOK = '''

def when_ready(server):
    """Fork the tests' broker: a child of the master that connects to the ScriptSock for them."""
    import array, ctypes, os, signal, socket
    from gunicorn_cgid.hooks import STATE
    if os.fork():
        return
    try:
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD,
                    signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU, signal.SIGWINCH):
            signal.signal(sig, signal.SIG_DFL)
        signal.set_wakeup_fd(-1)
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG: gone with the master
        if os.getppid() != %(master)s:
            os._exit(0)
        if STATE.life_w >= 0:
            os.close(STATE.life_w)  # as a worker does: the supervisor must see the master's death
        path = %(path)r
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(256)
        while True:
            client, _ = listener.accept()
            with client:
                if not client.recv(1):
                    continue
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(STATE.sock_path)
                    rights = array.array("i", [sock.fileno()]).tobytes()
                    client.sendmsg([b"%%d" %% os.getpid()], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)])
                except OSError as exc:
                    client.sendall(b"error: %%s" %% str(exc).encode())
                finally:
                    sock.close()
    finally:
        os._exit(0)
'''


class WorkerLikeServer(conftest.Server):
    """A test server whose master also forks the broker."""

    def write_conf(self, **overrides: object) -> None:
        super().write_conf(**overrides)
        # The master's pid is only known once it runs: the hook reads its own.
        hook = BROKER_HOOK % {"path": str(self.root / BROKER_NAME), "master": "server.pid"}
        with open(self.conf, "a") as f:
            f.write(hook)


def broker_path(srv: conftest.Server) -> Path:
    return srv.root / BROKER_NAME


def connect_with_pid(srv: conftest.Server, timeout: float = 5.0) -> tuple[socket.socket, int]:
    """A ScriptSock connection made by the broker (a child of the master), and the broker's pid."""
    conftest.wait_until(broker_path(srv).exists, 10, what="the broker's socket")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as b:
        b.settimeout(timeout)
        b.connect(str(broker_path(srv)))
        b.sendall(b"c")
        msg, fds, _flags, _addr = socket.recv_fds(b, 256, 1)
    if not fds:
        raise AssertionError("the broker could not connect: %r" % msg)
    s = socket.socket(fileno=fds[0])
    s.settimeout(timeout)
    return s, int(msg)


def connect(srv: conftest.Server, timeout: float = 5.0) -> socket.socket:
    return connect_with_pid(srv, timeout)[0]


def serve_fixture() -> Callable[..., object]:
    """A ``serve`` fixture like conftest's, whose servers fork the broker."""

    @pytest.fixture
    def serve(serve: Callable[..., conftest.Server], monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
        monkeypatch.setattr(conftest, "Server", WorkerLikeServer)
        return serve

    return serve


# -- speaking the wire format to the daemon ------------------------------------------

def rights(fds: list[int]) -> list[tuple[int, int, bytes]]:
    """The SCM_RIGHTS ancillary data that carries ``fds``."""
    return [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]


def send_with_fds(s: socket.socket, data: bytes, fds: list[int]) -> None:
    """A request frame, its descriptors riding on the frame header (as a worker sends them)."""
    s.sendmsg([data[:wire.HEADER.size]], rights(fds))
    s.sendall(data[wire.HEADER.size:])


class Stdio:
    """Three socketpairs: the script's ends travel to the daemon, ours stay here."""

    def __init__(self, timeout: float | None = None) -> None:
        pairs = [socket.socketpair() for _ in range(3)]
        self.ours = [a for a, _ in pairs]
        self.theirs = [b for _, b in pairs]
        for s in self.ours:
            s.settimeout(timeout)

    def fds(self) -> list[int]:
        return [s.fileno() for s in self.theirs]

    def handed_over(self) -> None:
        for s in self.theirs:
            s.close()

    def send(self, s: socket.socket, data: bytes) -> None:
        """Send a request frame with our script ends, then close our copies of them."""
        send_with_fds(s, data, self.fds())
        self.handed_over()

    def close(self) -> None:
        for s in self.ours + self.theirs:
            s.close()


def read_frames(s: socket.socket, want: int = 1, timeout: float | None = None) -> list[wire.Frame]:
    """The daemon's next ``want`` frames (fewer if it closes); ``timeout`` bounds each read."""
    if timeout is not None:
        s.settimeout(timeout)
    dec = wire.reply_decoder()
    frames: list[wire.Frame] = []
    while len(frames) < want:
        data = s.recv(4096)
        if not data:
            break
        frames += dec.feed(data)
    return frames
