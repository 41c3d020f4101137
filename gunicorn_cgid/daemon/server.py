"""The CGI daemon: accepts ScriptSock connections and spawns one script per connection.

Runs in the daemon process (a child of the supervisor). Single-threaded and
never blocking: every connection is non-blocking with a deadline, so a peer
that stalls or sends garbage is dropped without delaying other spawns (Apache's
daemon reads with no timeout). It reaps its scripts on SIGCHLD and reports the
exit status and resource use on the script's own connection. When that
connection closes, the script's whole process group is killed.
"""

from __future__ import annotations

import array
import errno
import os
import selectors
import signal
import socket
import struct
import time
from collections import deque

from gunicorn_cgid import wire
from gunicorn_cgid.daemon import spawn
from gunicorn_cgid.daemon.log import log
from gunicorn_cgid.daemon.signals import SignalWakeup

REQUEST_READ_SECONDS = 10.0  # a worker sends its whole request at once
MAX_WAIT_SECONDS = 3600.0    # epoll takes an int of milliseconds: ~24.8 days at most
RECV_BYTES = 65536
_FDS_SPACE = socket.CMSG_SPACE(wire.SPAWN_FDS * array.array("i").itemsize)
_UCRED = struct.Struct("3i")


class Conn:
    """One worker connection: at most one script."""

    __slots__ = ("sock", "peer", "decoder", "fds", "req", "pid", "started",
                 "deadline", "state", "kill_reason", "leftovers")

    def __init__(self, sock: socket.socket, peer: tuple[int, int, int]) -> None:
        self.sock = sock
        self.peer = peer
        self.decoder = wire.request_decoder()
        self.fds: list[int] = []
        self.req: wire.SpawnRequest | None = None
        self.pid = 0
        self.started = 0.0
        self.deadline: float | None = time.monotonic() + REQUEST_READ_SECONDS
        self.state = "reading"  # reading -> queued -> running -> exited
        self.kill_reason = wire.REASON_NONE
        self.leftovers = False  # its process group outlived it (checked when it was reaped)

    def close_fds(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def describe(self) -> str:
        name = self.req.filename.decode("utf-8", "replace") if self.req else "?"
        return "%s (pid %d, peer pid %d)" % (name, self.pid, self.peer[0])


class Daemon:
    """The accept loop; ``serve()`` returns when a stop signal was handled."""

    def __init__(self, listener: socket.socket, master_pid: int) -> None:
        self.listener = listener
        self.master_pid = master_pid
        self.uid = os.geteuid()
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, Conn] = {}       # fileno -> conn
        self.running: dict[int, Conn] = {}     # pid -> conn
        self.queue: deque[Conn] = deque()
        self.kills: dict[int, tuple[float, Conn]] = {}  # pgid -> (when to send SIGKILL, whose group)
        self.stopping: float | None = None     # deadline of a graceful stop
        self.wakeup = SignalWakeup()

    # -- setup ---------------------------------------------------------------

    def install_signals(self) -> None:
        self.wakeup.install()
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def serve(self) -> None:
        self.install_signals()
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, self._accept)
        self.sel.register(self.wakeup.reader, selectors.EVENT_READ, self._wake)
        while True:
            timeout = self._next_timeout()
            for key, _ in self.sel.select(timeout):
                key.data(key.fileobj)
            self._run_timers()
            if self.stopping is not None and not self.running:
                break
            if self.stopping is not None and time.monotonic() >= self.stopping:
                self._kill_everything(signal.SIGKILL)
                break
        log("info", "cgid daemon stopped")

    # -- events --------------------------------------------------------------

    def _wake(self, sock: socket.socket) -> None:
        sigs = self.wakeup.received()
        if signal.SIGCHLD in sigs:
            self._reap()
        if signal.SIGINT in sigs:
            log("info", "cgid daemon stopping now: killing %d script(s)", len(self.running))
            self.stopping = time.monotonic()
            groups = self._all_groups()
            self.queue.clear()
            # Connections first: a worker must learn that the daemon is gone
            # (502) before its script's output ends (which reads as a script
            # that printed no headers).
            for conn in list(self.conns.values()):
                self._close(conn)
            for pgid in groups:
                spawn.signal_group(pgid, signal.SIGKILL)
            self._reap()
        elif signal.SIGTERM in sigs and self.stopping is None:
            self._begin_stop()

    def _begin_stop(self) -> None:
        grace = max((c.req.kill_grace_ms for c in self.running.values() if c.req), default=3000)
        self.stopping = time.monotonic() + grace / 1000.0
        try:
            self.sel.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        for conn in list(self.queue):
            self._fail(conn, wire.FAIL_SHUTDOWN, 0, "the CGI daemon is stopping")
        self.queue.clear()
        for conn in list(self.running.values()):
            conn.kill_reason = wire.REASON_SHUTDOWN
            self._kill_group(conn.pid, conn)
        for conn in list(self.conns.values()):
            if conn.state == "exited" and conn.leftovers:
                self._kill_group(conn.pid, conn)

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(64):
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log("error", "accept on ScriptSock failed: %s", exc)
                return
            try:
                peer = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
            except OSError:
                peer = (0, -1, -1)
            if peer[1] not in (self.uid, 0):
                log("warning", "refused ScriptSock connection from uid %d (pid %d): only uid %d may connect",
                    peer[1], peer[0], self.uid)
                sock.close()
                continue
            sock.setblocking(False)
            conn = Conn(sock, peer)
            self.conns[sock.fileno()] = conn
            self.sel.register(sock, selectors.EVENT_READ, self._readable)

    def _readable(self, sock: socket.socket) -> None:
        conn = self.conns.get(sock.fileno())
        if conn is None:
            return
        try:
            # Received descriptors must be close-on-exec: scripts are spawned
            # without closing the daemon's descriptors one by one.
            data, ancdata, flags, _addr = sock.recvmsg(RECV_BYTES, _FDS_SPACE, socket.MSG_CMSG_CLOEXEC)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            data, ancdata, flags = b"", [], 0
            log("debug", "ScriptSock read failed: %s", exc)
        received = _fds_from(ancdata)
        if flags & socket.MSG_CTRUNC:
            _close_all(received)  # the kernel closed the ones that did not fit
            self._drop(conn, "more than %d file descriptors" % wire.SPAWN_FDS)
            return
        if received:
            if conn.state != "reading" or conn.fds:
                _close_all(received)
                self._drop(conn, "file descriptors sent twice")
                return
            conn.fds = received
        if not data:
            self._closed_by_peer(conn)
            return
        try:
            frames = conn.decoder.feed(data)
        except wire.WireError as exc:
            self._drop(conn, "bad frame: %s" % exc)
            return
        for fr in frames:
            if fr.kind == wire.SPAWN:
                self._on_spawn(conn, fr.payload)
            elif fr.kind == wire.KILL:
                self._on_kill(conn, fr.payload)
            if conn.sock.fileno() < 0:
                return

    def _on_spawn(self, conn: Conn, payload: bytes) -> None:
        if conn.state != "reading":
            self._drop(conn, "second SPAWN on one connection")
            return
        try:
            req = wire.decode_spawn(payload)
        except wire.WireError as exc:
            self._fail(conn, wire.FAIL_REQUEST, 0, "error reading request on cgid socket: %s" % exc)
            return
        if len(conn.fds) != wire.SPAWN_FDS:
            self._fail(conn, wire.FAIL_REQUEST, 0, "expected %d file descriptors, got %d"
                       % (wire.SPAWN_FDS, len(conn.fds)))
            return
        if req.master_pid != self.master_pid:
            self._fail(conn, wire.FAIL_REQUEST, 0, "CGI request received from wrong server instance "
                       "(master %d, expected %d); see script_sock" % (req.master_pid, self.master_pid))
            return
        conn.req = req
        if self.stopping is not None:
            self._fail(conn, wire.FAIL_SHUTDOWN, 0, "the CGI daemon is stopping")
        elif req.max_scripts and len(self.running) >= req.max_scripts:
            conn.state = "queued"
            conn.deadline = time.monotonic() + req.queue_timeout_ms / 1000.0
            self.queue.append(conn)
        else:
            self._spawn(conn)

    def _spawn(self, conn: Conn) -> None:
        req = conn.req
        assert req is not None
        try:
            pid = spawn.spawn_script(req, conn.fds)
        except OSError as exc:
            code = exc.errno or 0
            self._fail(conn, wire.FAIL_EXEC, code, "error spawning CGI child: exec of %r failed: %s"
                       % (req.filename.decode("utf-8", "replace"), exc.strerror or exc))
            return
        except ValueError as exc:
            self._fail(conn, wire.FAIL_EXEC, 0, "error spawning CGI child: %s" % exc)
            return
        conn.close_fds()
        conn.pid = pid
        conn.started = time.monotonic()
        conn.state = "running"
        conn.deadline = conn.started + req.max_runtime_ms / 1000.0 if req.max_runtime_ms else None
        self.running[pid] = conn
        self._send(conn, wire.encode_started(pid))

    def _on_kill(self, conn: Conn, payload: bytes) -> None:
        try:
            reason = wire.decode_kill(payload)
        except wire.WireError as exc:
            self._drop(conn, "bad KILL frame: %s" % exc)
            return
        if conn.state == "running":
            conn.kill_reason = reason or wire.REASON_KILLED
            self._kill_group(conn.pid, conn)
        elif conn.state == "queued":
            self.queue.remove(conn)
            self._close(conn)

    def _closed_by_peer(self, conn: Conn) -> None:
        if conn.state == "running":
            # The worker is gone (its request ended, or it died): the script
            # has nobody left to talk to.
            conn.kill_reason = conn.kill_reason or wire.REASON_DISCONNECT
            log("info", "worker closed the connection of running CGI script %s: killing its process group",
                conn.describe())
            self._kill_group(conn.pid, conn)
        elif conn.state == "exited" and conn.leftovers and not self._pgid_in_use(conn.pid):
            # The script has exited; what is left of its group is a leftover.
            if self._kill_group(conn.pid, conn):
                log("info", "killing processes left behind by CGI script %s", conn.describe())
        elif conn.state == "queued":
            self.queue.remove(conn)
        elif conn.state == "reading" and (conn.decoder.pending or conn.fds):
            log("error", "dropped ScriptSock connection from pid %d: closed in the middle of a request"
                " (%d bytes, %d descriptors)", conn.peer[0], conn.decoder.pending, len(conn.fds))
        self._close(conn)

    # -- scripts -------------------------------------------------------------

    def _kill_group(self, pgid: int, conn: Conn) -> bool:
        """SIGTERM the group now, SIGKILL after the grace; False if it is empty."""
        if pgid <= 1:
            return False
        pending = self.kills.get(pgid)
        if pending is not None and pending[1] is conn:
            return True  # already on its way
        if not spawn.signal_group(pgid, signal.SIGTERM):
            return False
        grace = (conn.req.kill_grace_ms if conn.req else 3000) / 1000.0
        self.kills[pgid] = (time.monotonic() + grace, conn)
        return True

    def _pgid_in_use(self, pgid: int) -> bool:
        return pgid in self.running

    def _reap(self) -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            conn = self.running.pop(pid, None)
            if conn is None:
                continue  # an orphan adopted as subreaper
            conn.state = "exited"
            conn.deadline = None
            # Checked now, while no other process can take this pgid: once the
            # group is empty its number may go to a new process.
            conn.leftovers = spawn.group_alive(pid)
            info = wire.Exited(
                wait_status=status,
                wall_us=int((time.monotonic() - conn.started) * 1e6),
                utime_us=int(usage.ru_utime * 1e6),
                stime_us=int(usage.ru_stime * 1e6),
                maxrss_kb=int(usage.ru_maxrss),
                reason=conn.kill_reason,
            )
            if conn.sock.fileno() >= 0:
                self._send(conn, wire.encode_exited(info))
            self._start_queued()

    def _start_queued(self) -> None:
        while self.queue and self.stopping is None:
            head = self.queue[0]
            assert head.req is not None
            if head.req.max_scripts and len(self.running) >= head.req.max_scripts:
                return
            self.queue.popleft()
            self._spawn(head)

    def _all_groups(self) -> set[int]:
        """Every process group we answer for: running scripts, pending kills, leftovers."""
        groups = set(self.running) | set(self.kills)
        groups.update(c.pid for c in self.conns.values() if c.state == "exited" and c.leftovers)
        return groups

    def _kill_everything(self, sig: int) -> None:
        for pgid in self._all_groups():
            spawn.signal_group(pgid, sig)

    # -- timers --------------------------------------------------------------

    def _next_timeout(self) -> float | None:
        times = [c.deadline for c in self.conns.values() if c.deadline is not None]
        times.extend(when for when, _owner in self.kills.values())
        if self.stopping is not None:
            times.append(self.stopping)
        if not times:
            return None
        # A far deadline (cgi_max_runtime of weeks) is simply waited for in steps.
        return min(MAX_WAIT_SECONDS, max(0.0, min(times) - time.monotonic()))

    def _run_timers(self) -> None:
        now = time.monotonic()
        for pgid, (when, owner) in list(self.kills.items()):
            if when <= now:
                del self.kills[pgid]
                current = self.running.get(pgid)
                if current is not None and current is not owner:
                    continue  # the number now belongs to a newer script's group
                if spawn.group_alive(pgid):
                    log("warning", "CGI process group %d didn't exit, sending SIGKILL", pgid)
                    spawn.signal_group(pgid, signal.SIGKILL)
        for conn in list(self.conns.values()):
            if conn.deadline is None or conn.deadline > now:
                continue
            conn.deadline = None
            if conn.state == "reading":
                self._drop(conn, "incomplete request after %.0f s" % REQUEST_READ_SECONDS)
            elif conn.state == "queued":
                self.queue.remove(conn)
                self._fail(conn, wire.FAIL_BUSY, errno.EAGAIN,
                           "cgi_max_scripts reached; no slot within the queue timeout")
            elif conn.state == "running":
                log("warning", "CGI script %s exceeded cgi_max_runtime: killing its process group",
                    conn.describe())
                conn.kill_reason = wire.REASON_MAX_RUNTIME
                self._kill_group(conn.pid, conn)

    # -- connection plumbing -------------------------------------------------

    def _send(self, conn: Conn, data: bytes) -> None:
        try:
            sent = conn.sock.send(data)
        except OSError:
            sent = -1
        if sent != len(data):
            # Replies are a few bytes on an otherwise idle socket: a short
            # write means the worker stopped reading, so it is gone.
            log("debug", "could not send reply to worker for %s", conn.describe())
            self._closed_by_peer(conn)

    def _fail(self, conn: Conn, code: int, err: int, message: str) -> None:
        log("error" if code != wire.FAIL_BUSY else "warning", "%s", message)
        try:
            conn.sock.send(wire.encode_failed(code, err, message))
        except OSError:
            pass
        self._close(conn)

    def _drop(self, conn: Conn, why: str) -> None:
        log("error", "dropped ScriptSock connection from pid %d: %s", conn.peer[0], why)
        if conn.state == "running":
            self._closed_by_peer(conn)
        else:
            if conn.state == "queued" and conn in self.queue:
                self.queue.remove(conn)
            self._close(conn)

    def _close(self, conn: Conn) -> None:
        conn.close_fds()
        fd = conn.sock.fileno()
        if fd >= 0:
            self.conns.pop(fd, None)
            try:
                self.sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.sock.close()


def _fds_from(ancdata: list) -> list[int]:
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - (len(data) % arr.itemsize)])
            fds.extend(arr)
    return fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
