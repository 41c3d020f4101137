"""Moving bytes between the client and a running script, with deadlines.

Runs in the worker, identically under gthread and gevent: one ``select.poll``
(gevent's own after monkey-patching, looked up at call time, and asked only
when nothing is ready yet: see ``readiness``) over the script's
stdout, stderr and control socket, and the client's socket while nothing is
left to read from it. The request body is written by a helper thread (a
greenlet under gevent) unless it is small, so a script that writes megabytes
before reading its input never deadlocks (Apache writes the whole body first).
"""

from __future__ import annotations

import fcntl
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from gunicorn_cgid import wire
from gunicorn_cgid.errors import (
    CGIError,
    ClientError,
    ClientGone,
    ClientStalled,
    DaemonLost,
    RequestTimeout,
    ScriptTimeout,
)
from gunicorn_cgid.worker import readiness
from gunicorn_cgid.worker.client import ScriptChannel

# Script output is read in large steps (fewer trips through the WSGI server
# per MiB); stderr and the daemon's frames are small.
STDOUT_READ_BYTES = 262144
READ_BYTES = 65536
# gunicorn's Body.read(n) copies its buffer on every call, so a body costs
# far less CPU read in large steps (1 MiB: 0.25 ms of CPU, 64 KiB: 4 ms).
BODY_READ_BYTES = 1024 * 1024
STDERR_LINE_MAX = 8192        # longer stderr lines are split (Apache: 8191)
INLINE_BODY_MAX = 65536       # a body this small is sent without a helper thread
BODY_WATCH_TICK_SECONDS = 0.25
BODY_FINISH_SECONDS = 0.5     # for a body helper that read everything to finish
_IN = select.POLLIN | select.POLLPRI
_DONE = select.POLLHUP | select.POLLERR | select.POLLNVAL


def _wait(fds: dict[int, str], wait: float | None) -> list[tuple[int, int]]:
    """poll() the descriptors for up to ``wait`` seconds (None: no limit).

    Under gevent, what is ready already is taken without its watchers.
    """
    if readiness.cooperative():
        events = readiness.ready_now(fds, _IN)
        if events:
            return events
    poller = select.poll()
    for fd in fds:
        poller.register(fd, _IN)
    return poller.poll(None if wait is None else int(wait * 1000) + 1)


class IdleTimeout(ScriptTimeout):
    """No output (and no input consumed) for ``cgi_timeout`` seconds."""

    def __init__(self) -> None:
        super().__init__("no output and no input read for the idle timeout")


class ScriptSession:
    """One script's streams; the caller reads stdout chunks with ``read()``."""

    def __init__(self, channel: ScriptChannel, idle_timeout: float,
                 on_stderr: Callable[[bytes], None], client: socket.socket | None = None,
                 keep_body: int = 0, shared_client: bool = False, body_limit: int = 0) -> None:
        self.ch = channel
        self.body_limit = body_limit  # bytes a chunked body may have; 0: unlimited
        self.body_read = 0
        self.shared_client = shared_client  # HTTP/2: one socket carries many requests
        self.idle_timeout = idle_timeout
        self.on_stderr = on_stderr
        self.client = client
        self.exited: wire.Exited | None = None
        self.stdout_open = True
        self.stderr_open = True
        self.control_open = True
        self.last_activity = time.monotonic()
        self.stderr_buf = b""
        self.body_error: str | None = None
        self.body_thread: Any = None
        self.watch_client = client is not None
        self.keep_body = keep_body
        self.body_head = bytearray()  # the first keep_body bytes, for ScriptLog
        self.body_reading = False     # the body helper is waiting for the client
        self.body_failure: CGIError | None = None  # why the body could not be read whole
        for fr in channel.early:
            self._on_frame(fr)

    # -- request body --------------------------------------------------------

    def send_body(self, wsgi_input: Any, length: int | None) -> None:
        """Start feeding the body to stdin; closes stdin at its end (EOF for the script).

        A body that cannot be read whole (the client left, stalled, or sent
        broken chunks) is never ended with EOF: the script is killed instead,
        so it cannot take a partial upload for a complete one, and the
        failure is raised from the next ``read()``.
        """
        if length == 0 or wsgi_input is None:
            self._close_stdin()
            return
        if length is not None and length <= INLINE_BODY_MAX and self.client is not None and not self.shared_client:
            self._send_inline(wsgi_input, length)
            return
        self.watch_client = False  # the client socket carries the body now
        self.body_thread = threading.Thread(target=self._pump_body, args=(wsgi_input, length),
                                            name="cgi-body", daemon=True)
        self.body_thread.start()

    def _send_inline(self, wsgi_input: Any, length: int) -> None:
        """A small body, read here under the idle timeout (no helper thread)."""
        client = self.client
        assert client is not None
        previous = client.gettimeout()
        client.settimeout(self.idle_timeout)
        try:
            data = _read_exactly(wsgi_input, length)
        except Exception as exc:
            self._body_failed(exc)
            return
        finally:
            try:
                client.settimeout(previous)
            except OSError:
                pass
        if len(data) < length:
            self._body_failed(None)
            return
        self._keep(data)
        try:
            self.ch.stdin.sendall(data)
        except OSError as exc:
            self.body_error = str(exc)
        self._close_stdin()

    def _pump_body(self, wsgi_input: Any, length: int | None) -> None:
        remaining = length
        try:
            while remaining is None or remaining > 0:
                want = BODY_READ_BYTES if remaining is None else min(BODY_READ_BYTES, remaining)
                self.body_reading = True
                chunk = wsgi_input.read(want)
                self.body_reading = False
                if not chunk:
                    if remaining:
                        self._body_failed(None)
                        return
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                else:
                    self.body_read += len(chunk)
                    if self.body_limit and self.body_read > self.body_limit:
                        raise ClientError("chunked request body past %d bytes (cgi_limit_request_body)"
                                          % self.body_limit, status=413)
                self._keep(chunk)
                if self.body_error is None:
                    try:
                        self.ch.stdin.sendall(chunk)
                        self.last_activity = time.monotonic()
                    except OSError as exc:
                        # The script stopped reading (AH02651); keep draining
                        # the client so the connection stays usable.
                        self.body_error = str(exc)
        except Exception as exc:  # a client read error, a timeout, broken chunks
            self._body_failed(exc)
            return
        finally:
            self.body_reading = False
            # The body is read: from now on the client's socket says only
            # whether the client is still there.
            self.watch_client = self.client is not None and self.body_failure is None
        self._close_stdin()

    def _body_failed(self, exc: BaseException | None) -> None:
        """Kill the script (stdin stays open: no EOF) and remember why for ``read()``."""
        if exc is None:
            failure: CGIError = ClientError("request body shorter than its Content-Length: the client"
                                            " stopped sending")
        elif isinstance(exc, CGIError):
            failure = exc
        elif isinstance(exc, TimeoutError):
            failure = RequestTimeout("the client sent no request body for %.0f s" % self.idle_timeout)
        elif isinstance(exc, OSError):
            failure = ClientGone("the client connection failed while sending the request body: %s" % exc)
        else:
            failure = ClientError("malformed request body: %s" % (str(exc) or exc.__class__.__name__))
        self.body_failure = failure
        self.body_error = failure.message
        try:
            self.ch.control.sendall(wire.encode_kill(wire.REASON_KILLED))
        except OSError:
            pass

    def stop_body(self, timeout: float) -> bool:
        """Make sure the body helper is done before the server touches the connection again.

        The request body must be fully read by us, or not at all, before the
        server reuses the connection: two readers of one body would race. A
        helper still waiting for the client is stopped by shutting down the
        reading side of the client's socket (not over HTTP/2, whose streams
        share it); the server then sees EOF and closes the connection after
        the response. False if the helper is still running.
        """
        thread = self.body_thread
        if thread is None or not thread.is_alive():
            return True
        # A helper that has read the whole body may still be finishing (its
        # last write to stdin, closing it): let it, or a shutdown would cut a
        # keep-alive connection that is fine.
        if not self.body_reading:
            thread.join(BODY_FINISH_SECONDS)
            if not thread.is_alive():
                return True
        if self.client is not None and self.shared_client is False:
            try:
                self.client.shutdown(socket.SHUT_RD)
            except OSError:
                pass
        thread.join(timeout)
        return not thread.is_alive()

    def _keep(self, data: bytes) -> None:
        room = self.keep_body - len(self.body_head)
        if room > 0:
            self.body_head += data[:room]

    def _close_stdin(self) -> None:
        # Only this process holds our end, so closing it is the script's EOF.
        if self.ch.stdin is not None:
            self.ch.stdin.close()

    # -- output --------------------------------------------------------------

    def read(self) -> bytes:
        """The next chunk of stdout; b"" at EOF. Raises IdleTimeout, ClientGone or DaemonLost.

        The client's socket is watched only here: once the script's output
        is over, ending it (``finish``, ``kill``) must not depend on the client.
        """
        while self.stdout_open:
            chunk = self._poll_once(want_stdout=True)
            if self.body_failure is not None:
                raise self.body_failure
            if chunk:
                return chunk
        if self.body_failure is not None:
            raise self.body_failure
        return b""

    def finish(self, timeout: float) -> wire.Exited | None:
        """After stdout EOF: drain stderr and wait for the exit report, at most ``timeout``."""
        deadline = time.monotonic() + timeout
        while (self.stderr_open or self.exited is None) and self.control_open:
            if time.monotonic() >= deadline:
                break
            try:
                self._poll_once(want_stdout=False, deadline=deadline)
            except IdleTimeout:
                break
        self._flush_stderr()
        return self.exited

    def kill(self, reason: int, wait: float) -> wire.Exited | None:
        """Ask the daemon to kill the script's process group; wait for its exit report."""
        if self.exited is None and self.control_open:
            try:
                self.ch.control.sendall(wire.encode_kill(reason))
            except OSError:
                pass
            self.stdout_open = False
            try:
                self.finish(wait)
            except (ClientGone, DaemonLost):
                pass
        return self.exited

    def close(self) -> None:
        """Close the streams; keep the daemon connection when its request is cleanly over.

        Kept only once the exit report is read and nothing else can write to
        the connection: a body helper still running could send a KILL meant
        for this script that would reach the connection's next one.
        """
        self._flush_stderr()
        helper = self.body_thread
        self.ch.close(keep=self.exited is not None and self.control_open and not self.ch.decoder.pending
                      and (helper is None or not helper.is_alive()))

    def read_for(self, seconds: float) -> bytes | None:
        """Like ``read()``, but gives up after ``seconds``: None when nothing came in time."""
        give_up = time.monotonic() + seconds
        while self.stdout_open:
            remaining = give_up - time.monotonic()
            if remaining <= 0:
                return None
            chunk = self._poll_once(want_stdout=True, wait_max=remaining)
            if self.body_failure is not None:
                raise self.body_failure
            if chunk:
                return chunk
        if self.body_failure is not None:
            raise self.body_failure
        return b""

    def _poll_once(self, want_stdout: bool, deadline: float | None = None,
                   wait_max: float | None = None) -> bytes:
        fds: dict[int, str] = {}
        if want_stdout and self.stdout_open:
            fds[self.ch.stdout.fileno()] = "stdout"
        if self.stderr_open:
            fds[self.ch.stderr.fileno()] = "stderr"
        if self.control_open:
            fds[self.ch.control.fileno()] = "control"
        if want_stdout and self.watch_client and self.client is not None:
            try:
                fds[self.client.fileno()] = "client"
            except OSError:
                self.watch_client = False
        now = time.monotonic()
        # The idle deadline counts from the last byte moved either way (stdout,
        # stderr, or request body into stdin), never from "now": wake-ups that
        # move nothing must not push it forward.
        idle_deadline = self.last_activity + self.idle_timeout if want_stdout else deadline
        if deadline is not None and idle_deadline is not None:
            idle_deadline = min(idle_deadline, deadline)
        wait = None if idle_deadline is None else max(0.0, idle_deadline - now)
        if self.body_thread is not None and not self.watch_client and self.client is not None:
            # Wake up now and then while the body is being read, to start
            # watching the client as soon as it is done.
            wait = BODY_WATCH_TICK_SECONDS if wait is None else min(wait, BODY_WATCH_TICK_SECONDS)
        if wait_max is not None:
            wait = wait_max if wait is None else min(wait, wait_max)
        events = _wait(fds, wait)
        if not events:
            if idle_deadline is not None and time.monotonic() >= idle_deadline:
                if want_stdout and self.body_reading:
                    raise RequestTimeout("the client sent no request body for %.0f s" % self.idle_timeout)
                raise IdleTimeout()
            return b""
        out = b""
        for fd, ev in events:
            which = fds.get(fd)
            if which == "stdout":
                data = _recv(self.ch.stdout, STDOUT_READ_BYTES)
                if data:
                    self.last_activity = time.monotonic()
                    out = data
                # Hung up before the poll, and the read did not fill the
                # buffer: that was all of it, no read for the EOF is needed.
                self.stdout_open = bool(data) and not (ev & select.POLLHUP and len(data) < STDOUT_READ_BYTES)
            elif which == "stderr":
                data = _recv(self.ch.stderr)
                if data:
                    self.last_activity = time.monotonic()
                    self._on_stderr_bytes(data)
                self.stderr_open = bool(data) and not (ev & select.POLLHUP and len(data) < READ_BYTES)
            elif which == "control":
                self._read_control()
            elif which == "client":
                self._check_client(ev)
        return out

    def _read_control(self) -> None:
        data = _recv(self.ch.control)
        if not data:
            self.control_open = False
            if self.exited is None:
                raise DaemonLost("the CGI daemon closed the connection of pid %d" % self.ch.pid)
            return
        try:
            frames = self.ch.decoder.feed(data)
        except wire.WireError as exc:
            self.control_open = False
            raise DaemonLost("garbage from the CGI daemon: %s" % exc) from None
        for fr in frames:
            self._on_frame(fr)

    def _on_frame(self, fr: wire.Frame) -> None:
        if fr.kind == wire.EXITED:
            self.exited = wire.decode_exited(fr.payload)

    def _check_client(self, ev: int) -> None:
        """The client's socket became readable while its script runs.

        Data is a pipelined request, not ours to read. EOF is a half-close,
        legal once the request is complete (``nc -N``, proxies, health
        checkers): the response is still delivered, and a client that really
        left is noticed at the first write. Only a reset or an error means the
        client is gone now.
        """
        self.watch_client = False  # in every case, nothing more to learn here
        if ev & (select.POLLERR | select.POLLHUP):
            raise ClientGone("the client reset the connection")
        try:
            self.client.recv(1, socket.MSG_PEEK)  # type: ignore[union-attr]
        except BlockingIOError:
            self.watch_client = True  # woken for nothing
        except ConnectionResetError:
            raise ClientGone("the client reset the connection") from None
        except OSError as exc:
            raise ClientGone("the client connection failed: %s" % (exc.strerror or exc)) from None

    # -- stderr --------------------------------------------------------------

    def _on_stderr_bytes(self, data: bytes) -> None:
        buf = self.stderr_buf + data
        while True:
            nl = buf.find(b"\n")
            if nl < 0 or nl > STDERR_LINE_MAX:
                if len(buf) >= STDERR_LINE_MAX:
                    self.on_stderr(buf[:STDERR_LINE_MAX])
                    buf = buf[STDERR_LINE_MAX:]
                    continue
                break
            self.on_stderr(buf[:nl].rstrip(b"\r"))
            buf = buf[nl + 1:]
        self.stderr_buf = buf

    def _flush_stderr(self) -> None:
        if self.stderr_buf:
            self.on_stderr(self.stderr_buf.rstrip(b"\r"))
            self.stderr_buf = b""


def _recv(sock: socket.socket, size: int = READ_BYTES) -> bytes:
    """A read on a socket poll() found readable; a reset reads as EOF."""
    try:
        return sock.recv(size)
    except OSError:
        return b""


def _read_exactly(stream: Any, length: int) -> bytes:
    parts = []
    while length > 0:
        chunk = stream.read(length)
        if not chunk:
            break
        parts.append(chunk)
        length -= len(chunk)
    return b"".join(parts)


SIOCOUTQ = 0x5411        # Linux: bytes in a TCP socket's send queue
MIN_PIECE_BYTES = 4096


def paced(client: socket.socket, data: bytes, timeout: float) -> Iterator[bytes]:
    """``data`` in pieces the client's socket can take without blocking the server's write.

    gunicorn writes each piece with a blocking ``sendall`` and no timeout, so
    a client that stops reading would hold the worker forever. Each piece is
    sized to the free room in the socket's send buffer, after waiting up to
    ``timeout`` for there to be any; raises ClientStalled when there is none.
    """
    fd = client.fileno()
    while data:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        if not poller.poll(int(timeout * 1000) + 1):
            raise ClientStalled("the client read nothing of the response for %.0f s" % timeout)
        try:
            # SO_SNDBUF reports twice the payload room (the kernel's bookkeeping).
            room = client.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) // 2
            room -= struct.unpack("i", fcntl.ioctl(fd, SIOCOUTQ, b"\0\0\0\0"))[0]
        except OSError:
            room = len(data)
        room = max(room, MIN_PIECE_BYTES)
        yield data[:room]
        data = data[room:]
