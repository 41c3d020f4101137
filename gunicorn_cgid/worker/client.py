"""ScriptSock client: ask the daemon to start a script wired to our sockets.

Runs in the worker. Only sockets are used, and ``socket``/``time`` are looked
up at call time, so under gevent every wait is cooperative. The script's
stdin, stdout and stderr are three socketpairs whose far ends travel to the
daemon with SCM_RIGHTS: request and response bytes never pass through the
daemon. A request without a body gets the worker's own /dev/null as stdin
instead of a socketpair: the script sees EOF at once either way.
Deviation from Apache: mod_cgid puts stdin and stdout on one socket, so a
script that closes stdout keeps the response open until it exits; here
each stream has its own, and EOF on stdout ends the response.

Connections are kept: when a request is over (its script's exit report
read), the worker sends DONE and keeps the connection for a later request
of any thread or greenlet, up to ``MAX_KEPT``. A kept connection whose
daemon stopped or died reads as EOF and is dropped when taken. A request
is sent once more, on a new connection that waits in the backlog for the
next daemon, only when the daemon cannot have started it: the send
failed, the daemon answered FAIL_RETRY (it is stopping), or it closed the
connection with the request still unread (the kernel then reports a reset,
not EOF). A clean EOF after the request was sent gets no second try: the
daemon may have died after starting the script, which must not run twice.
"""

from __future__ import annotations

import _socket
import errno
import os
import select
import socket
import time
from dataclasses import dataclass

from gunicorn_cgid import wire
from gunicorn_cgid.errors import Busy, CGIError, DaemonUnavailable, SpawnError
from gunicorn_cgid.worker import readiness

CONNECT_RETRY_SECONDS = 5.0   # covers a daemon restart; the supervisor keeps the backlog
REPLY_TIMEOUT_SECONDS = 30.0  # STARTED or FAILED, after any cgi_max_scripts queueing
MAX_KEPT = 64                 # idle ScriptSock connections a worker keeps (per socket path)

_kept: dict[str, list[socket.socket]] = {}  # list.append and list.pop are atomic: no lock


class _Closed(DaemonUnavailable):
    """The daemon closed the connection before any reply; ``unread``: without reading all we sent."""

    def __init__(self, message: str, unread: bool) -> None:
        super().__init__(message)
        self.unread = unread


@dataclass(eq=False)
class ScriptChannel:
    """The worker's ends of one running script."""
    control: socket.socket
    stdin: socket.socket | None  # None: the script's stdin is /dev/null (no body)
    stdout: socket.socket
    stderr: socket.socket
    pid: int
    decoder: wire.FrameDecoder
    early: list[wire.Frame]  # frames that came with STARTED (a fast script's EXITED)
    path: str = ""           # the ScriptSock, where a kept connection goes back

    def close(self, keep: bool = False) -> None:
        """Close the script's streams; the connection is kept for another request if ``keep``."""
        _close((self.stdout, self.stderr) if self.stdin is None else (self.stdin, self.stdout, self.stderr))
        if keep and self.path:
            release(self.path, self.control)
        else:
            _close((self.control,))


def release(path: str, control: socket.socket) -> None:
    """Tell the daemon the request is over (DONE) and keep the connection, or close it."""
    kept = _kept.setdefault(path, [])
    if len(kept) >= MAX_KEPT:
        _close((control,))
        return
    try:
        # An idle connection's buffer is empty: one send takes the five bytes
        # (gevent's sendall would ask for SO_SNDBUF first).
        sent = control.send(wire.DONE_FRAME)
        if sent < len(wire.DONE_FRAME):
            control.sendall(wire.DONE_FRAME[sent:])
    except OSError:
        _close((control,))
        return
    kept.append(control)


def _checkout(path: str) -> socket.socket:
    """A kept connection that is still quiet, or a new one."""
    kept = _kept.get(path)
    while kept:
        try:
            sock = kept.pop()
        except IndexError:  # another thread took the last one
            break
        if _quiet(sock):
            return sock
        _close((sock,))  # EOF: its daemon stopped or died
    return connect(path)


def _quiet(sock: socket.socket) -> bool:
    """Nothing to read: a kept connection that is still open and was sent nothing since."""
    try:
        return not readiness.ready_now((sock.fileno(),), select.POLLIN)
    except (OSError, ValueError):
        return False


def connect(path: str, retry_seconds: float = CONNECT_RETRY_SECONDS) -> socket.socket:
    """Connect to the ScriptSock, retrying while it is missing or refusing (a restart)."""
    deadline = time.monotonic() + retry_seconds
    delay = 0.01
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except (FileNotFoundError, ConnectionRefusedError, BlockingIOError) as exc:
            sock.close()
            if time.monotonic() + delay > deadline:
                raise DaemonUnavailable("unable to connect to cgi daemon at %r: %s" % (path, exc.strerror)) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        except OSError as exc:
            sock.close()
            raise DaemonUnavailable("unable to connect to cgi daemon at %r: %s" % (path, exc)) from None


def start_script(path: str, request: wire.SpawnRequest, queue_seconds: float = 0.0,
                 body: bool = True) -> ScriptChannel:
    """Spawn one script and return our ends; raises SpawnError, Busy or DaemonUnavailable.

    ``body``: False when the request has none; the script's stdin is then
    /dev/null, which saves a socketpair.
    """
    try:
        data = wire.encode_spawn(request)
    except wire.WireError as exc:
        raise CGIError("cannot pass the request for %s to exec: %s" % (os.fsdecode(request.filename), exc)) from None
    # stdout and stderr are read only once poll() has found them readable, so
    # a plain socket never blocks there, even under gevent; stdin is written
    # to, and must wait cooperatively for a script that reads slowly.
    stdout_ours, stdout_theirs = _plain_socketpair()
    stderr_ours, stderr_theirs = _plain_socketpair()
    if body:
        stdin_ours, stdin_theirs = (_cooperative_socketpair if _cooperative() else _plain_socketpair)()
        theirs = (stdin_theirs, stdout_theirs, stderr_theirs)
        streams = (stdin_ours, stdout_ours, stderr_ours)
        fds = [stdin_theirs.fileno(), stdout_theirs.fileno(), stderr_theirs.fileno()]
    else:
        stdin_ours = None
        theirs = (stdout_theirs, stderr_theirs)
        streams = (stdout_ours, stderr_ours)
        fds = [_null_fd(), stdout_theirs.fileno(), stderr_theirs.fileno()]
    try:
        control, decoder, frames = _ask(path, data, fds, REPLY_TIMEOUT_SECONDS + queue_seconds)
    except BaseException:
        _close(streams)
        raise
    finally:
        _close(theirs)
    ours = (control, *streams)
    try:
        fr = frames[0]
        pid = wire.decode_started(fr.payload) if fr.kind == wire.STARTED else 0
    except wire.WireError as exc:
        _close(ours)
        raise DaemonUnavailable("garbage from cgi daemon: %s" % exc) from None
    if fr.kind == wire.STARTED:
        return ScriptChannel(control, stdin_ours, stdout_ours, stderr_ours, pid, decoder, frames[1:], path)
    _close(ours)
    if fr.kind == wire.FAILED:
        failure = wire.decode_failed(fr.payload)
        if failure.code == wire.FAIL_BUSY:
            raise Busy(failure.message, headers=[("Retry-After", "5")])
        if failure.code == wire.FAIL_EXEC:
            raise SpawnError("%s (errno %d: %s)" % (failure.message, failure.errno,
                                                   errno.errorcode.get(failure.errno, "?")), code="AH01241")
        if failure.code == wire.FAIL_REFUSED:
            # A check before exec (suEXEC's): the errno field carries the HTTP status.
            raise CGIError(failure.message, status=failure.errno if failure.errno in (403, 500) else 500)
        raise DaemonUnavailable("cgi daemon refused the request: %s" % failure.message)
    raise DaemonUnavailable("cgi daemon sent an unexpected frame %#x" % fr.kind)


def _ask(path: str, data: bytes, fds: list[int],
         timeout: float) -> tuple[socket.socket, wire.FrameDecoder, list[wire.Frame]]:
    """Send the SPAWN and its descriptors; the connection, its decoder and the first reply frames.

    Once more on a new connection when the daemon cannot have started it
    (see the module docstring).
    """
    control = _checkout(path)
    tries = 2
    while True:
        tries -= 1
        try:
            # The descriptors ride with the first byte; a partial send (a
            # full socket buffer) goes on without them.
            try:
                sent = control.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _fd_array(fds))])
                if sent < len(data):
                    control.sendall(data[sent:])
            except OSError as exc:
                raise _Closed("cannot send request to cgi daemon: %s" % exc, unread=True) from None
            decoder = wire.reply_decoder()
            try:
                frames = _read_frames(control, decoder, timeout)
                retry = frames[0].kind == wire.FAILED and wire.decode_failed(frames[0].payload).code == wire.FAIL_RETRY
            except wire.WireError as exc:
                raise DaemonUnavailable("garbage from cgi daemon: %s" % exc) from None
            if not retry:
                return control, decoder, frames
            raise _Closed("cgi daemon is stopping and did not start the script", unread=True)
        except _Closed as exc:
            _close((control,))
            if not exc.unread or not tries:
                raise
            control = connect(path)
        except BaseException:
            _close((control,))
            raise


_null = -1


def _null_fd() -> int:
    """This process's /dev/null, opened once: the stdin of scripts whose request has no body.

    Read-write, as a socketpair end would be. A worker forked from a
    process that opened it inherits the same open file, which is as good.
    """
    global _null
    if _null < 0:
        fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        if _null < 0:
            _null = fd
        else:  # another thread opened it meanwhile
            os.close(fd)
    return _null


def _cooperative() -> bool:
    """Whether ``socket`` is gevent's (monkey-patched): its sockets are non-blocking underneath."""
    return socket.socketpair.__module__ != "socket"


def _plain_socketpair() -> tuple[socket.socket, socket.socket]:
    """A blocking socketpair without the standard library's wrapper.

    ``socket.socketpair`` wraps each end in a ``socket.socket``, which costs
    a getsockname per end; the worker needs only send, recv, shutdown and
    close, which the bare sockets have.
    """
    return _socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)  # type: ignore[return-value]


def _cooperative_socketpair() -> tuple[socket.socket, socket.socket]:
    """Under gevent: our end cooperative, the script's a plain blocking one.

    gevent makes its sockets O_NONBLOCK, a flag of the open file that would
    travel with the descriptor, and scripts expect blocking stdio; so only
    our end is wrapped (the far end is only passed on and closed).
    """
    ours, theirs = _socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, ours.detach()), theirs  # type: ignore[return-value]


def _read_frames(sock: socket.socket, decoder: wire.FrameDecoder, timeout: float) -> list[wire.Frame]:
    # poll() bounds the wait without switching the socket to timeout mode and
    # back (four fcntl calls per request with settimeout).
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(int(remaining * 1000) + 1):
                raise DaemonUnavailable("no reply from cgi daemon within %.0f s" % timeout)
            try:
                data = sock.recv(4096)
            except ConnectionResetError:
                # A Unix socket closed with data unread resets its peer: the
                # daemon went away before reading the whole request.
                raise _Closed("cgi daemon went away without reading the request", unread=True) from None
            if not data:
                raise _Closed("cgi daemon closed the connection before starting the script", unread=False)
            frames = decoder.feed(data)
            if frames:
                return frames
    except OSError as exc:
        raise DaemonUnavailable("lost the cgi daemon: %s" % exc) from None


def _fd_array(fds: list[int]) -> bytes:
    import array
    return array.array("i", fds).tobytes()


def _close(socks: tuple[socket.socket, ...]) -> None:
    for sock in socks:
        try:
            sock.close()
        except OSError:
            pass
