"""ScriptSession against a fake daemon: socketpairs and frames, no processes.

The "daemon" here is the test itself: it holds the far ends of the control,
stdin, stdout and stderr sockets and writes frames as a real daemon would.
"""

from __future__ import annotations

import io
import select
import socket
import threading

import pytest

from gunicorn_cgid import wire
from gunicorn_cgid.errors import ClientError, ClientGone, DaemonLost, RequestTimeout, ScriptTimeout
from gunicorn_cgid.worker.client import ScriptChannel
from gunicorn_cgid.worker.stream import STDERR_LINE_MAX, ScriptSession

pytestmark = pytest.mark.timeout(20)

EXIT_OK = wire.Exited(wait_status=0, wall_us=1000, utime_us=10, stime_us=20, maxrss_kb=1234, reason=0)


class FakeDaemon:
    """The far ends of one script's sockets."""

    def __init__(self) -> None:
        self.control, control = socket.socketpair()
        stdin, self.stdin = socket.socketpair()   # the script reads self.stdin
        stdout, self.stdout = socket.socketpair()  # the script writes self.stdout
        stderr, self.stderr = socket.socketpair()
        self.client, self.client_peer = socket.socketpair()  # the HTTP client's connection
        self.channel = ScriptChannel(control, stdin, stdout, stderr, 4242, wire.reply_decoder(), [])
        self.lines: list[bytes] = []

    def session(self, timeout: float = 5.0, client: bool = True) -> ScriptSession:
        return ScriptSession(self.channel, timeout, self.lines.append, self.client if client else None)

    def exit(self, info: wire.Exited = EXIT_OK) -> None:
        self.control.sendall(wire.encode_exited(info))

    def kill_frames(self) -> list[int]:
        """The KILL reasons the worker sent so far (waits briefly for the first)."""
        reasons = []
        decoder = wire.request_decoder()
        while select.select([self.control], [], [], 2.0)[0]:
            data = self.control.recv(4096)
            if not data:
                break
            for fr in decoder.feed(data):
                if fr.kind == wire.KILL:
                    reasons.append(wire.decode_kill(fr.payload))
            if reasons:
                break
        return reasons

    def stdin_at_eof(self) -> bool:
        if not select.select([self.stdin], [], [], 0)[0]:
            return False
        return self.stdin.recv(1, socket.MSG_PEEK) == b""


@pytest.fixture
def daemon():
    d = FakeDaemon()
    yield d
    for s in (d.control, d.stdin, d.stdout, d.stderr, d.client, d.client_peer):
        s.close()
    d.channel.close()


def test_output_then_eof_then_exit_report(daemon):
    s = daemon.session()
    s.send_body(None, 0)
    daemon.stdout.sendall(b"Content-Type: text/plain\n\nhello")
    assert s.read() == b"Content-Type: text/plain\n\nhello"
    daemon.stdout.close()
    assert s.read() == b""
    daemon.stderr.close()
    daemon.exit()
    assert s.finish(2.0) == EXIT_OK
    assert daemon.stdin_at_eof()  # an empty body is a clean EOF


def test_stderr_lines_are_split_and_flushed(daemon):
    s = daemon.session()
    s.send_body(None, 0)
    daemon.stderr.sendall(b"one\r\ntwo\n" + b"x" * (STDERR_LINE_MAX + 10) + b"\ntail")
    daemon.stderr.close()
    daemon.stdout.close()
    assert s.read() == b""
    daemon.exit()
    s.finish(2.0)
    s.close()
    assert daemon.lines == [b"one", b"two", b"x" * STDERR_LINE_MAX, b"x" * 10, b"tail"]


def test_silence_is_an_idle_timeout(daemon):
    s = daemon.session(timeout=0.3)
    s.send_body(None, 0)
    with pytest.raises(ScriptTimeout):
        s.read()


def test_daemon_closing_before_the_exit_report_is_daemon_lost(daemon):
    s = daemon.session()
    s.send_body(None, 0)
    daemon.control.close()
    with pytest.raises(DaemonLost):
        s.read()


def test_garbage_from_the_daemon_is_daemon_lost(daemon):
    s = daemon.session()
    s.send_body(None, 0)
    daemon.control.sendall(b"\xff" * 64)
    with pytest.raises(DaemonLost, match="garbage"):
        s.read()


def test_a_half_closed_client_still_gets_its_response(daemon):
    s = daemon.session(timeout=1.0)
    s.send_body(None, 0)
    daemon.client_peer.shutdown(socket.SHUT_WR)
    daemon.stdout.sendall(b"late")
    assert s.read() == b"late"


def test_client_gone_then_kill_still_gets_the_exit_status(daemon):
    s = daemon.session()
    s.send_body(None, 0)
    daemon.client_peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    daemon.client_peer.close()
    with pytest.raises(ClientGone):
        s.read()
    # The kill waits for the exit report; the client is not watched again.
    replier = threading.Thread(target=lambda: (daemon.kill_frames(), daemon.stderr.close(), daemon.exit(
        wire.Exited(15, 1, 1, 1, 1, wire.REASON_KILLED))))
    replier.start()
    exited = s.kill(wire.REASON_KILLED, 5.0)
    replier.join(5)
    assert exited is not None and exited.reason == wire.REASON_KILLED


def test_a_pipelined_request_is_not_a_disconnect(daemon):
    s = daemon.session(timeout=0.5)
    s.send_body(None, 0)
    daemon.client_peer.sendall(b"GET /next HTTP/1.1\r\n")
    daemon.stdout.sendall(b"data")
    assert s.read() == b"data"


def test_body_is_streamed_then_eof(daemon):
    body = b"a" * 300_000  # past the inline size: the helper thread
    s = daemon.session()
    s.send_body(io.BytesIO(body), len(body))
    got = bytearray()
    while True:
        chunk = daemon.stdin.recv(65536)
        if not chunk:
            break
        got += chunk
    assert bytes(got) == body


@pytest.mark.parametrize("length", [100, 300_000])
def test_short_body_kills_the_script_and_never_ends_stdin(daemon, length):
    s = daemon.session()
    s.send_body(io.BytesIO(b"x" * (length // 2)), length)  # the client left half way
    assert daemon.kill_frames() == [wire.REASON_KILLED]
    assert not daemon.stdin_at_eof()
    daemon.stdout.close()
    with pytest.raises(ClientError, match="shorter than its Content-Length") as info:
        s.read()
    assert info.value.status == 400


class BrokenChunks(io.RawIOBase):
    def read(self, n: int = -1) -> bytes:
        raise ValueError("Invalid chunk size: 'zz'")


def test_malformed_body_is_a_bad_request(daemon):
    s = daemon.session()
    s.send_body(BrokenChunks(), None)
    assert daemon.kill_frames() == [wire.REASON_KILLED]
    daemon.stdout.close()
    with pytest.raises(ClientError, match="chunk") as info:
        s.read()
    assert info.value.status == 400
    assert not daemon.stdin_at_eof()


class Stalled(io.RawIOBase):
    """A client that sent part of its body and then nothing."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.first = True

    def read(self, n: int = -1) -> bytes:
        if self.first:
            self.first = False
            return b"y" * 1000
        self.release.wait(30)
        return b""


def test_a_stalled_upload_times_out_although_the_helper_wakes_up(daemon):
    body = Stalled()
    s = daemon.session(timeout=0.6)
    s.send_body(body, 10_000_000)
    try:
        with pytest.raises(RequestTimeout):
            s.read()
    finally:
        body.release.set()


def test_output_of_a_script_that_already_hung_up_ends_without_another_read(daemon):
    s = daemon.session()
    s.send_body(None, 0)
    daemon.stdout.sendall(b"Content-Type: text/plain\n\nhello")
    daemon.stdout.close()
    daemon.stderr.sendall(b"a line\n")
    daemon.stderr.close()
    assert s.read() == b"Content-Type: text/plain\n\nhello"
    assert not s.stdout_open  # the hang-up came with the data: no read for the EOF
    assert s.read() == b""


def test_a_hang_up_after_a_full_buffer_still_reads_on(daemon):
    # A read that fills the buffer may have left data behind: EOF is only
    # taken from a short read.
    from gunicorn_cgid.worker import stream
    s = daemon.session()
    s.send_body(None, 0)
    payload = b"x" * (stream.STDOUT_READ_BYTES + 10)
    writer = threading.Thread(target=lambda: (daemon.stdout.sendall(payload), daemon.stdout.close()))
    writer.start()
    got = b""
    while chunk := s.read():
        got += chunk
    writer.join()
    assert got == payload
