"""The CGI daemon against a hostile or broken peer on its ScriptSock.

Each test talks to the socket of a real server (``<root>/run/cgisock.<master
pid>``) while HTTP requests keep going through the same daemon: every bad
connection is dropped with a log line, the daemon survives (same pid),
nobody else is delayed, and its descriptor count returns to where it was.
The connections are made by a worker-like child of the master
(``workerlike``), since the daemon refuses every other peer at once.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gunicorn_cgid import wire

from . import workerlike
from .conftest import CGI_BIN, Server, descendants, kept_connections, pid_alive, wait_until
from .workerlike import Stdio, read_frames, rights, send_with_fds

serve = workerlike.serve_fixture()

RECV_TIMEOUT = 5.0
READ_DEADLINE = 10.0  # the daemon's REQUEST_READ_SECONDS


# -- helpers -----------------------------------------------------------------

def sock_path(srv: Server) -> str:
    return str(srv.root / "run" / ("cgisock.%d" % srv.pid))


def connect(srv: Server) -> socket.socket:
    """A connection the daemon takes for a worker's: made by the broker, which is then the peer."""
    s, pid = workerlike.connect_with_pid(srv, RECV_TIMEOUT)
    srv.peer_pid = pid  # type: ignore[attr-defined]
    return s


def peer(srv: Server) -> int:
    """The pid the daemon names for our connections (the broker's)."""
    return srv.peer_pid  # type: ignore[attr-defined,no-any-return]


def fd_count(pid: int) -> int:
    return len(os.listdir("/proc/%d/fd" % pid))


def request(srv: Server, script: str, query: str = "", master_pid: int | None = None, magic_ok: bool = True,
            location: str = "/cgi-bin/", max_runtime_ms: int = 0) -> bytes:
    filename = str(CGI_BIN / script).encode()
    req = wire.SpawnRequest(
        filename=filename, cwd=str(CGI_BIN).encode(), argv=(filename,),
        env=(b"CGID_TEST_MARKER=" + str(srv.root).encode(), b"QUERY_STRING=" + query.encode(),
             b"PATH=/usr/bin:/bin"),
        location=location, max_runtime_ms=max_runtime_ms,
        master_pid=srv.pid if master_pid is None else master_pid)
    data = wire.encode_spawn(req)
    if not magic_ok:
        data = data[:wire.HEADER.size] + b"XXXX" + data[wire.HEADER.size + 4:]
    return data


def hand_over(srv: Server, data: bytes) -> tuple[socket.socket, Stdio]:
    """Connect and send one request frame with a fresh set of script stdio ends."""
    io = Stdio(RECV_TIMEOUT)
    s = connect(srv)
    io.send(s, data)
    return s, io


def script_tree(pid: int) -> list[int]:
    """sleep.sh and its two sleeps, once all three exist."""
    return wait_until(lambda: (lambda t: t if len(t) >= 3 else None)([pid] + descendants(pid)), 5,
                      what="the script and its children")  # type: ignore[return-value]


def dropped(s: socket.socket, timeout: float = RECV_TIMEOUT) -> bool:
    """Whether the daemon closes its end (EOF or reset) within ``timeout`` seconds.

    Reads past anything it sent first. False when the connection is still
    open at the deadline.
    """
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            s.settimeout(remaining)
            if not s.recv(65536):
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def log_has(srv: Server, text: str, timeout: float = 5.0) -> None:
    wait_until(lambda: text in srv.errorlog.read_text(errors="replace"), timeout, interval=0.02,
               what="%r in the daemon log" % text)


class Traffic:
    """HTTP requests back to back in a thread, recording each status and latency."""

    def __init__(self, srv: Server) -> None:
        self.srv = srv
        self.stop_flag = threading.Event()
        self.results: list[tuple[object, float]] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            start = time.monotonic()
            try:
                status: object = self.srv.get("/cgi-bin/life-ok.sh", timeout=15)[0]
            except BaseException as exc:  # recorded, asserted on by the test
                status = exc
            self.results.append((status, time.monotonic() - start))

    def stop(self) -> list[tuple[object, float]]:
        self.stop_flag.set()
        self.thread.join(30)
        assert not self.thread.is_alive()
        assert self.results, "no request completed"
        return self.results


IDLE_SOCKETS = 3  # the listening ScriptSock and the two ends of the signal wakeup pair


def socket_count(pid: int) -> int:
    count = 0
    for name in os.listdir("/proc/%d/fd" % pid):
        try:
            count += os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:")
        except OSError:
            pass
    return count


def own_fds(srv: Server, daemon: int) -> int:
    """The daemon's descriptors, less the connections the workers keep (their number varies with load)."""
    return fd_count(daemon) - sum(kept_connections(srv, daemon).values())


def baseline(srv: Server) -> tuple[int, int]:
    """(daemon pid, its own fd count) once it is idle.

    The worker's request just served may still be ending in the daemon for
    a moment after the response reached us: wait until only the daemon's
    own sockets, and the connections workers keep, are left.
    """
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
    daemon = srv.daemon_pid()
    wait_until(lambda: socket_count(daemon) - sum(kept_connections(srv, daemon).values()) == IDLE_SOCKETS, 5,
               what="the daemon to hold no connection but the kept ones")
    return daemon, own_fds(srv, daemon)


def back_to_baseline(srv: Server, daemon: int, fds: int) -> None:
    assert srv.daemon_pid() == daemon, "the daemon was restarted: it crashed"
    wait_until(lambda: own_fds(srv, daemon) == fds, 5, what="the daemon's fd count back to %d (now %d)"
               % (fds, own_fds(srv, daemon)))
    assert "cgid daemon crashed" not in srv.log()
    assert "cgid daemon process died" not in srv.log()


# -- bad frames ----------------------------------------------------------------

def _garbage(srv: Server) -> str:
    s = connect(srv)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert dropped(s)
    s.close()
    return "dropped ScriptSock connection from pid %d: bad frame: unexpected frame kind" % peer(srv)


def _reply_kind(srv: Server) -> str:
    s = connect(srv)
    s.sendall(wire.encode_started(1))  # a daemon's frame, sent to the daemon
    assert dropped(s)
    s.close()
    return "dropped ScriptSock connection from pid %d: bad frame: unexpected frame kind 0x50" % peer(srv)


def _oversize(srv: Server) -> str:
    s = connect(srv)
    s.sendall(struct.pack(">IB", 0xFFFFFFFF, wire.SPAWN) + b"\0" * 100)
    assert dropped(s)
    s.close()
    return "bad frame: frame of 4294967295 bytes exceeds %d" % wire.MAX_REQUEST_FRAME_BYTES


def _truncated_then_close(srv: Server) -> str:
    data = request(srv, "life-ok.sh")
    s = connect(srv)
    s.sendall(data[:len(data) // 2])
    s.close()
    return "dropped ScriptSock connection from pid %d: closed in the middle of a request (%d bytes" % (
        peer(srv), len(data) // 2)


def _truncated_with_fds_then_half_close(srv: Server) -> str:
    data = request(srv, "life-ok.sh")
    io = Stdio(RECV_TIMEOUT)
    s = connect(srv)
    s.sendmsg([data[:7]], rights(io.fds()))
    io.handed_over()
    s.shutdown(socket.SHUT_WR)
    assert dropped(s)
    # The daemon closed the three descriptors it held: our ends see EOF.
    assert all(o.recv(1) == b"" for o in io.ours[1:])
    s.close()
    io.close()
    return "closed in the middle of a request (7 bytes, 3 descriptors)"


def _spawn_without_fds(srv: Server) -> str:
    s = connect(srv)
    s.sendall(request(srv, "life-ok.sh"))
    (fr,) = read_frames(s)
    assert fr.kind == wire.FAILED
    failed = wire.decode_failed(fr.payload)
    assert failed.code == wire.FAIL_REQUEST and "expected 3 file descriptors, got 0" in failed.message
    assert dropped(s)
    s.close()
    return "expected 3 file descriptors, got 0"


def _too_many_fds(srv: Server) -> str:
    extra = [os.open(os.devnull, os.O_RDONLY) for _ in range(5)]
    try:
        s = connect(srv)
        try:
            send_with_fds(s, request(srv, "life-ok.sh"), extra)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon may drop us on the first message, before the rest is sent
        assert dropped(s)
        s.close()
    finally:
        for fd in extra:
            os.close(fd)
    return "dropped ScriptSock connection from pid %d: more than 3 file descriptors" % peer(srv)


def _fds_twice(srv: Server) -> str:
    data = request(srv, "life-ok.sh")
    io = Stdio(RECV_TIMEOUT)
    s = connect(srv)
    ancillary = rights(io.fds())
    s.sendmsg([data[:3]], ancillary)
    s.sendmsg([data[3:6]], ancillary)
    io.handed_over()
    assert dropped(s)
    s.close()
    io.close()
    return "dropped ScriptSock connection from pid %d: file descriptors sent twice" % peer(srv)


def _bad_magic(srv: Server) -> str:
    s, io = hand_over(srv, request(srv, "life-ok.sh", magic_ok=False))
    (fr,) = read_frames(s)
    assert wire.decode_failed(fr.payload).code == wire.FAIL_REQUEST
    assert dropped(s)
    s.close()
    io.close()
    return "error reading request on cgid socket: bad magic 0x58585858"


def _wrong_master(srv: Server) -> str:
    s, io = hand_over(srv, request(srv, "life-ok.sh", master_pid=srv.pid + 100000))
    (fr,) = read_frames(s)
    assert "wrong server instance" in wire.decode_failed(fr.payload).message
    assert dropped(s)
    s.close()
    io.close()
    return "CGI request received from wrong server instance (master %d" % (srv.pid + 100000)


def _bad_kill(srv: Server) -> str:
    s = connect(srv)
    s.sendall(wire.frame(wire.KILL, b""))  # a KILL without its reason byte
    assert dropped(s)
    s.close()
    return "dropped ScriptSock connection from pid %d: bad KILL frame: truncated payload" % peer(srv)


def _unknown_location(srv: Server) -> str:
    s, io = hand_over(srv, request(srv, "life-ok.sh", location="/nowhere/"))
    (fr,) = read_frames(s)
    failed = wire.decode_failed(fr.payload)
    assert failed.code == wire.FAIL_REQUEST and "'/nowhere/'" in failed.message
    assert dropped(s)
    s.close()
    io.close()
    return "CGI request for location '/nowhere/', which the daemon's policy does not have"


def _max_size_garbage(srv: Server) -> str:
    s = connect(srv)
    s.sendall(wire.HEADER.pack(wire.MAX_REQUEST_FRAME_BYTES, wire.SPAWN) + b"\xff" * wire.MAX_REQUEST_FRAME_BYTES)
    (fr,) = read_frames(s)
    assert wire.decode_failed(fr.payload).code == wire.FAIL_REQUEST
    assert dropped(s)
    s.close()
    return "error reading request on cgid socket: bad magic 0xffffffff"


CASES = [_garbage, _reply_kind, _oversize, _truncated_then_close, _truncated_with_fds_then_half_close,
         _spawn_without_fds, _too_many_fds, _fds_twice, _bad_magic, _wrong_master, _unknown_location, _bad_kill,
         _max_size_garbage]


def test_bad_peers_are_dropped_and_nobody_notices(serve):
    srv = serve("gthread")
    daemon, fds = baseline(srv)
    traffic = Traffic(srv)
    try:
        for case in CASES:
            expected = case(srv)
            log_has(srv, expected)
    finally:
        results = traffic.stop()
    failures = [r for r in results if r[0] != 200]
    slowest = max(latency for _, latency in results)
    print("\n%d requests during the bad peers, %d failures, slowest %.0f ms; daemon fds %d -> %d"
          % (len(results), len(failures), slowest * 1000, fds, fd_count(daemon)))
    assert not failures, failures[:5]
    assert slowest < 1.0
    back_to_baseline(srv, daemon, fds)


@pytest.mark.parametrize("frame, why", [
    ("spawn", "second SPAWN on one connection"),
    ("done", "DONE while the request is running"),  # only after the exit report
])
def test_a_frame_out_of_turn_kills_the_running_script(serve, frame, why):
    srv = serve("gthread")
    daemon, fds = baseline(srv)
    s, io = hand_over(srv, request(srv, "sleep.sh", "30"))
    (fr,) = read_frames(s)
    tree = script_tree(wire.decode_started(fr.payload))
    s.sendall(request(srv, "life-ok.sh") if frame == "spawn" else wire.DONE_FRAME)
    log_has(srv, "dropped ScriptSock connection from pid %d: %s" % (peer(srv), why))
    wait_until(lambda: not any(pid_alive(p) for p in tree), 2, what="the script tree to be killed")
    assert dropped(s)
    s.close()
    io.close()
    back_to_baseline(srv, daemon, fds)


# -- the protocol, spoken correctly ---------------------------------------------

def test_direct_spawn_reports_pid_and_exit_status(serve):
    srv = serve("gthread")
    daemon, fds = baseline(srv)
    s, io = hand_over(srv, request(srv, "exit7.sh"))
    io.ours[0].close()  # no request body
    frames = read_frames(s, 2)
    assert [f.kind for f in frames] == [wire.STARTED, wire.EXITED]
    pid = wire.decode_started(frames[0].payload)
    assert pid > 1
    exited = wire.decode_exited(frames[1].payload)
    assert os.WIFEXITED(exited.wait_status) and os.WEXITSTATUS(exited.wait_status) == 7
    assert exited.reason == wire.REASON_NONE and exited.wall_us > 0
    out = b""
    while chunk := io.ours[1].recv(4096):
        out += chunk
    assert out.endswith(b"\r\n\r\nbye\n")
    s.close()
    io.close()
    back_to_baseline(srv, daemon, fds)


def test_direct_kill_and_disconnect(serve):
    srv = serve("gthread")
    daemon, fds = baseline(srv)
    for how in ("kill", "disconnect"):
        s, io = hand_over(srv, request(srv, "sleep.sh", "30"))
        (fr,) = read_frames(s)
        pid = wire.decode_started(fr.payload)
        tree = script_tree(pid)
        if how == "kill":
            s.sendall(wire.encode_kill(wire.REASON_KILLED))
            (fr,) = read_frames(s)
            exited = wire.decode_exited(fr.payload)
            assert os.WIFSIGNALED(exited.wait_status) and os.WTERMSIG(exited.wait_status) == 15
            assert exited.reason == wire.REASON_KILLED
        else:
            s.close()
            log_has(srv, "worker closed the connection of running CGI script %s (pid %d" % (CGI_BIN / "sleep.sh", pid))
        wait_until(lambda t=tree: not any(pid_alive(p) for p in t), 2, what="the %s script tree to go" % how)
        s.close()
        io.close()
    back_to_baseline(srv, daemon, fds)


def test_done_hands_the_connection_to_the_next_request(serve):
    # A busy worker's DONE and its next SPAWN can arrive in one read, the
    # next script's descriptors with them.
    srv = serve("gthread")
    daemon, fds = baseline(srv)
    s, io = hand_over(srv, request(srv, "exit7.sh"))
    io.ours[0].close()
    first = read_frames(s, 2)
    assert [f.kind for f in first] == [wire.STARTED, wire.EXITED]
    io.close()
    for _ in range(3):
        nxt = Stdio(RECV_TIMEOUT)
        data = request(srv, "exit7.sh")
        s.sendmsg([wire.DONE_FRAME + data[:wire.HEADER.size]],
                  rights(nxt.fds()))
        s.sendall(data[wire.HEADER.size:])
        nxt.handed_over()
        nxt.ours[0].close()
        frames = read_frames(s, 2)
        assert [f.kind for f in frames] == [wire.STARTED, wire.EXITED]
        assert wire.decode_started(frames[0].payload) != wire.decode_started(first[0].payload)
        assert os.WEXITSTATUS(wire.decode_exited(frames[1].payload).wait_status) == 7
        nxt.close()
    s.sendall(wire.DONE_FRAME)
    assert not dropped(s, 0.2)  # an idle connection is kept, with no read deadline running on it
    s.close()
    back_to_baseline(srv, daemon, fds)


# -- stalls ----------------------------------------------------------------------

def test_stalled_connections_delay_nobody_and_are_dropped(serve):
    srv = serve("gthread")
    daemon, fds = baseline(srv)
    data = request(srv, "life-ok.sh")
    stalled = []
    opened = time.monotonic()
    for i in range(20):
        s = connect(srv)
        if i % 4 == 1:
            s.sendall(data[:3])            # half a header
        elif i % 4 == 2:
            s.sendall(data[:len(data) - 1])  # all but the last byte
        elif i % 4 == 3:
            s.sendall(wire.HEADER.pack(wire.MAX_REQUEST_FRAME_BYTES, wire.SPAWN) + b"x" * 1000)
        stalled.append(s)                  # i % 4 == 0: nothing at all
    wait_until(lambda: fd_count(daemon) >= fds + 20, 5, what="the daemon to hold the stalled connections")
    latencies = []
    for _ in range(20):
        start = time.monotonic()
        assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
        latencies.append(time.monotonic() - start)
    assert time.monotonic() - opened < READ_DEADLINE - 2, "too slow to prove the stalls were not waited for"
    for s in stalled:
        assert dropped(s, READ_DEADLINE + 5)
    waited = time.monotonic() - opened
    print("\n20 requests behind 20 stalled connections: slowest %.0f ms; stalls dropped after %.1f s"
          % (max(latencies) * 1000, waited))
    assert max(latencies) < 0.5, latencies
    assert READ_DEADLINE - 0.5 <= waited < READ_DEADLINE + 3
    log_has(srv, "dropped ScriptSock connection from pid %d: incomplete request after 10 s" % peer(srv))
    assert srv.errorlog.read_text().count("incomplete request after 10 s") == 20
    for s in stalled:
        s.close()
    back_to_baseline(srv, daemon, fds)


# -- random bytes --------------------------------------------------------------

_frameish = st.one_of(
    st.binary(max_size=200),
    st.builds(lambda n, k, rest: struct.pack(">IB", n, k) + rest,
              st.integers(0, 64), st.sampled_from([wire.SPAWN, wire.KILL]), st.binary(max_size=80)),
)


def test_random_bytes_never_hurt_the_daemon(serve):
    srv = serve("gthread")
    daemon, fds = baseline(srv)
    good = request(srv, "life-ok.sh")
    sent = [0]

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(st.lists(st.one_of(_frameish, st.integers(0, len(good)).map(lambda c: good[:c])), min_size=1,
                    max_size=4).map(b"".join))
    def one(data: bytes) -> None:
        s = connect(srv)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)  # no more: the daemon must let go at once
            assert dropped(s, 3.0)
        finally:
            s.close()
        sent[0] += 1

    one()
    assert sent[0] >= 20
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
    back_to_baseline(srv, daemon, fds)


def test_dropped_tells_an_open_connection_from_a_closed_one():
    """The helper the tests above rely on: it must be able to say no."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        theirs.sendall(b"a reply first")
        assert not dropped(ours, 0.2)  # data, but the peer is still there
        theirs.close()
        assert dropped(ours, 5)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(b"unread")  # the peer closes with this unread: we get a reset, not EOF
        theirs.close()
        assert dropped(ours, 5)
