"""The CGI daemon: accepts ScriptSock connections and spawns one script at a time on each.

Runs in the daemon process (a child of the supervisor). Single-threaded and
never blocking: every connection is non-blocking with a deadline, so a peer
that stalls or sends garbage is dropped without delaying other spawns (Apache's
daemon reads with no timeout). It reaps its scripts on SIGCHLD and reports the
exit status and resource use on the script's own connection. When that
connection closes, every process the script started is ended (see
``containment``: its cgroup, or its process group and a sweep of leftovers).

A worker keeps its connections: after a request's DONE, the connection
waits (IDLE) for the next SPAWN, and the record of the request that ended
lives on (``Conn``, one per request) until what its script left is gone.
Each request's lifecycle is ``lifecycle.ConnState`` with one transition
function; every deadline (request read, queue wait, cgi_max_runtime, kill
grace, the stop) is a timer in one heap.

Trust: only gunicorn's workers may connect (``_not_a_worker``: the
connecting process is a child of the master), and the limits are the
daemon's own ``policy``, received from the supervisor, never the request's.
Abuse is bounded: connections still sending their request, per peer and in
total, and the bytes of partial frames across all of them; at the
descriptor limit accepts pause instead of spinning.
"""

from __future__ import annotations

import array
import errno
import fcntl
import itertools
import os
import resource
import selectors
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from gunicorn_cgid import wire
from gunicorn_cgid.daemon import containment, policy, spawn
from gunicorn_cgid.daemon.lifecycle import ConnEvent, ConnState, conn_next
from gunicorn_cgid.daemon.log import Throttle, log
from gunicorn_cgid.daemon.signals import SignalWakeup
from gunicorn_cgid.daemon.timers import Timer, Timers

try:
    from gunicorn_cgid.daemon import suexec
except ImportError:  # run-as (per-location users) is not available
    suexec = None  # type: ignore[assignment]


class _NeverRaised(Exception):
    """Stands for ``suexec.Refusal`` where there is no suexec: no check can refuse."""


Refusal: type[Exception] = suexec.Refusal if suexec is not None else _NeverRaised

REQUEST_READ_SECONDS = 10.0  # a worker sends its whole request at once
MAX_WAIT_SECONDS = 3600.0    # epoll takes an int of milliseconds: ~24.8 days at most
SUPERVISOR_CHECK_SECONDS = 1.0  # the parent is checked at least this often (besides PDEATHSIG)
RESWEEP_SECONDS = 0.05       # after killing leftovers: their own children come to us next
RELEASE_RETRY_SECONDS = (0.01, 1.0)  # an emptied cgroup is removed when its last process is gone
RECV_BYTES = 65536
_FDS_SPACE = socket.CMSG_SPACE(wire.SPAWN_FDS * array.array("i").itemsize)
_UCRED = struct.Struct("3i")
# Linux 6.5: a pidfd of the process that called connect(), taken by the
# kernel at that moment (Python 3.11 has no name for it).
SO_PEERPIDFD = getattr(socket, "SO_PEERPIDFD", 77)
# Linux 6.13: that process's pid, parent and ids through its pidfd in one
# ioctl, _IOWR(PIDFS_IOCTL_MAGIC, 11, struct pidfd_info); ESRCH once it exited.
_PIDFD_INFO = struct.Struct("=QQIII")   # mask, cgroupid, pid, tgid, ppid: the start of struct pidfd_info
_PIDFD_INFO_SIZE = 64                   # PIDFD_INFO_SIZE_VER0
PIDFD_GET_INFO = (3 << 30) | (_PIDFD_INFO_SIZE << 16) | (0xFF << 8) | 11
_PIDFD_INFO_PID = 1

# Bounds against a peer that floods the socket. A worker sends its whole
# request at once, so a connection still reading is normally a matter of
# microseconds; many of them at once are a flood, and the oldest go first.
MAX_READING_CAP = 1024          # connections still sending their request, in total (see _reading_bounds)
MAX_PENDING_BYTES = 64 * 1024 * 1024  # partial frames held across all connections
ACCEPT_BATCH = 64
ACCEPT_BACKOFF_SECONDS = (0.01, 0.5)  # out of descriptors: accepts pause this long, doubling
READ_BEFORE_DROP = 8            # at the bound, this many of the oldest are read before one is dropped
READS_PER_REQUEST = 3           # recvmsg calls a whole request can take (header with descriptors, the rest)
STALE_READING_SECONDS = 1.0     # out of descriptors: a connection still reading after this long makes room
FD_MARGIN = 32                  # descriptors kept for the daemon's own use (listener, pipes, spawns, /proc)
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)

_CONNECTED = (ConnState.IDLE, ConnState.READING, ConnState.QUEUED, ConnState.RUNNING, ConnState.EXITED)
_TAKES_FDS = (ConnState.IDLE, ConnState.READING, ConnState.EXITED)  # EXITED: the next SPAWN's, glued to DONE
_IN_PROGRESS = (ConnState.RUNNING, ConnState.EXITED)  # a script started and its worker still there


class Conn:
    """One request on a worker's connection: at most one script.

    After the request's DONE its successor (IDLE) takes the socket and this
    record keeps ``sock`` None while what the script left is ended.
    """

    __slots__ = ("sock", "peer", "decoder", "fds", "req", "pid", "started", "born", "state",
                 "kill_reason", "deadline", "kill_timer", "cage", "leftovers", "release_delay", "counted",
                 "accepted")

    def __init__(self, sock: socket.socket, peer: tuple[int, int, int],
                 state: ConnState = ConnState.READING) -> None:
        self.sock: socket.socket | None = sock
        self.peer = peer
        self.decoder = wire.request_decoder()
        self.fds: list[int] = []
        self.req: wire.SpawnRequest | None = None
        self.pid = 0
        self.started = 0.0     # monotonic, for the wall time reported
        self.born = 0.0        # CLOCK_BOOTTIME just before the spawn, for the leftover sweep
        self.state = state
        self.kill_reason = wire.REASON_NONE
        self.deadline: Timer | None = None    # read, queue or cgi_max_runtime deadline
        self.kill_timer: Timer | None = None  # SIGKILL after the grace
        self.cage: str | None = None          # the script's cgroup, in cgroup mode
        self.leftovers = False  # its processes outlived it (checked when it was reaped)
        self.release_delay = RELEASE_RETRY_SECONDS[0]
        self.counted = 0        # bytes of partial frames counted against MAX_PENDING_BYTES
        self.accepted = time.monotonic()

    def advance(self, event: ConnEvent) -> ConnState:
        self.state = conn_next(self.state, event)
        return self.state

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


def resolve_accounts(pol: policy.Policy) -> dict[str, Any]:
    """Each run-as location's ``suexec.RunAs``; ValueError names the entry and what is wrong."""
    wanted = {prefix: loc for prefix, loc in pol.locations.items() if loc.user is not None}
    if not wanted:
        return {}
    if suexec is None:
        raise ValueError("script_alias[%r] has a user: run-as needs gunicorn_cgid.daemon.suexec, which this"
                         " installation lacks" % (next(iter(wanted)),))
    accounts = {}
    for prefix, loc in wanted.items():
        assert loc.user is not None
        try:
            accounts[prefix] = suexec.resolve(loc.user, loc.group)
        except ValueError as exc:
            raise ValueError("script_alias[%r]: %s" % (prefix, exc)) from None
    return accounts


def parent_of(pid: int) -> int:
    """The parent pid of ``pid`` from /proc, or -1 if it is gone or cannot be read.

    os.open and os.read rather than open(): no buffered file object to build
    on every connection.
    """
    try:
        fd = os.open("/proc/%d/stat" % pid, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        # comm, in parentheses, may hold anything but ends at the last ")".
        return int(os.read(fd, 512).rsplit(b")", 1)[1].split(None, 2)[1])
    except (OSError, IndexError, ValueError):
        return -1
    finally:
        os.close(fd)


def pidfd_parent(pidfd: int) -> int:
    """The parent pid of the process behind ``pidfd`` (PIDFD_GET_INFO); OSError ESRCH once it exited."""
    buf = bytearray(_PIDFD_INFO_SIZE)
    struct.pack_into("=Q", buf, 0, _PIDFD_INFO_PID)
    fcntl.ioctl(pidfd, PIDFD_GET_INFO, buf, True)
    return _PIDFD_INFO.unpack_from(buf)[4]


def _fd_budget() -> int:
    """How many descriptors the connections may hold: the limit, less FD_MARGIN for the daemon itself."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 30 if soft == resource.RLIM_INFINITY else max(8, soft - FD_MARGIN)


def _reading_bounds() -> tuple[int, int]:
    """(in total, per peer): connections still sending their request.

    An eighth of the descriptor limit in total (each may hold the script's
    three descriptors besides its own), at least 16, and half of that per
    peer, so one peer never fills the table and a burst of a busy worker's
    requests still fits.
    """
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    total = MAX_READING_CAP if soft == resource.RLIM_INFINITY else max(16, min(MAX_READING_CAP, soft // 8))
    return total, max(8, total // 2)


class Daemon:
    """The accept loop; ``serve()`` returns when a stop signal was handled.

    ``supervisor_pid``: the parent recorded before the fork; when it changes
    the daemon calls ``on_orphaned`` (which removes the socket) and stops at
    once, taking its scripts with it. ``rules``: the policy and its resolved
    accounts; ``policy_fd``: the pipe on which the supervisor sends new ones.
    """

    def __init__(self, listener: socket.socket, master_pid: int, supervisor_pid: int = 0,
                 cage: containment.ProcessGroups | None = None,
                 on_orphaned: Callable[[], None] | None = None,
                 rules: tuple[policy.Policy, dict[str, Any]] | None = None,
                 policy_fd: int = -1) -> None:
        self.listener = listener
        self.master_pid = master_pid
        self.supervisor_pid = supervisor_pid
        self.containment = cage or containment.ProcessGroups()
        self.on_orphaned = on_orphaned
        self.uid = os.geteuid()                     # the workers' (the daemon dropped to it)
        self.policy, self.accounts = rules if rules is not None else (policy.Policy(), {})
        self.setid = self.policy.needs_setid       # the privilege drop kept CAP_SETUID/SETGID/KILL
        self.policy_fd = policy_fd
        self.policy_reader = policy.PolicyReader()
        self.pidfd_peers = True                    # SO_PEERPIDFD works here (Linux 6.5)
        self.pidfd_info = True                     # PIDFD_GET_INFO works here (Linux 6.13)
        self.refusals = Throttle()
        self.max_reading, self.max_reading_per_peer = _reading_bounds()
        self.reading: dict[Conn, None] = {}        # connections still sending their request, oldest first
        self.reading_by_peer: dict[int, dict[Conn, None]] = {}
        self.pending_total = 0                     # bytes of partial frames, all connections
        self.fd_budget = _fd_budget()               # descriptors connections may hold
        self.accept_paused = False
        self.accept_backoff = 0.0
        self.fd_burst = 0                          # accepts that found no descriptor, this burst
        self.sel = selectors.DefaultSelector()
        self.timers = Timers()
        self.conns: dict[int, Conn] = {}       # fileno -> conn whose worker is connected
        self.running: dict[int, Conn] = {}     # pid -> conn whose script is not reaped yet
        self.ending: set[Conn] = set()         # worker gone, script reaped: leftovers or a cgroup to end
        self.queue: deque[Conn] = deque()
        self.stopping: float | None = None     # when the stop began
        self.stop_now = False
        self.orphaned = False
        self.listening = False
        self.sweep_due = False
        self.swept: set[int] = set()            # killed by the last sweep
        self.wakeup = SignalWakeup()

    # -- setup ---------------------------------------------------------------

    def install_signals(self) -> None:
        self.wakeup.install()
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def serve(self) -> None:
        self.install_signals()
        self.listener.setblocking(False)
        self.sel.register(self.listener, selectors.EVENT_READ, self._accept)
        self.listening = True
        self.sel.register(self.wakeup.reader, selectors.EVENT_READ, self._wake)
        if self.policy_fd >= 0:
            self.sel.register(self.policy_fd, selectors.EVENT_READ, self._policy_readable)
        self._check_supervisor()
        while not (self.stopping is not None and (self.stop_now or not self.running)):
            for key, _ in self.sel.select(self._timeout()):
                key.data(key.fileobj)
            self.timers.run_due(time.monotonic())
            self._check_supervisor()
            if self.sweep_due:
                self._sweep()
        self._finish()
        log("info", "cgid daemon stopped")

    def _timeout(self) -> float | None:
        when = self.timers.next_when()
        # A far deadline (cgi_max_runtime of weeks) is simply waited for in steps.
        timeout = None if when is None else min(MAX_WAIT_SECONDS, max(0.0, when - time.monotonic()))
        if self.supervisor_pid and not self.orphaned:
            timeout = SUPERVISOR_CHECK_SECONDS if timeout is None else min(timeout, SUPERVISOR_CHECK_SECONDS)
        return timeout

    def _check_supervisor(self) -> None:
        """Our parent is the supervisor recorded before the fork; anything else means it died."""
        if self.supervisor_pid and not self.orphaned and os.getppid() != self.supervisor_pid:
            self.orphaned = True
            log("warning", "the CGI supervisor %d is gone: the cgid daemon stops now with its scripts",
                self.supervisor_pid)
            self._unlisten()
            if self.on_orphaned is not None:
                self.on_orphaned()
            self._stop_now()

    # -- events --------------------------------------------------------------

    def _wake(self, sock: socket.socket) -> None:
        sigs = self.wakeup.received()
        if signal.SIGCHLD in sigs:
            self._reap()
        if signal.SIGINT in sigs:
            self._check_supervisor()  # SIGINT is also our PDEATHSIG
            self._stop_now()
        elif signal.SIGTERM in sigs and self.stopping is None:
            self._begin_stop()

    def _stop_now(self) -> None:
        if self.stop_now:
            return
        log("info", "cgid daemon stopping now: killing %d script(s)", len(self.running))
        self.stopping = time.monotonic()
        self.stop_now = True
        self._unlisten()
        self.queue.clear()
        # Connections first: a worker must learn that the daemon is gone
        # (502) before its script's output ends (which reads as a script
        # that printed no headers).
        scripts = self._scripts()
        for conn in list(self.conns.values()):
            self._close(conn)
        for conn in scripts:
            self.containment.kill(self._group_of(conn), conn.cage)
        self._reap()

    def _begin_stop(self) -> None:
        self.stopping = time.monotonic()
        self.timers.call_at(self.stopping + self._grace(), self._stop_deadline)
        self._unlisten()
        for conn in list(self.queue):
            self._fail(conn, wire.FAIL_SHUTDOWN, 0, "the CGI daemon is stopping")
        self.queue.clear()
        for conn in list(self.running.values()):
            conn.kill_reason = wire.REASON_SHUTDOWN
            self._end_script(conn)
        for conn in list(self.conns.values()):
            if conn.state is ConnState.EXITED and conn.leftovers:
                self._end_script(conn)
            elif conn.state is ConnState.IDLE:
                # Its worker connects again for its next request and waits in
                # the backlog for the next daemon; a SPAWN it may have sent
                # already is answered as not started.
                self._retry_elsewhere(conn)

    def _stop_deadline(self) -> None:
        for conn in self._scripts():
            self.containment.kill(self._group_of(conn), conn.cage)
        self.stop_now = True

    def _grace(self) -> float:
        return self.policy.kill_grace_ms / 1000.0

    # -- the policy ----------------------------------------------------------

    def _policy_readable(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:  # the supervisor is gone: its death is seen by _check_supervisor
            self.sel.unregister(fd)
            os.close(fd)
            self.policy_fd = -1
            return
        try:
            received = self.policy_reader.feed(data)
        except policy.PolicyError as exc:
            log("error", "bad policy frame from the supervisor, ignoring the rest: %s", exc)
            self.sel.unregister(fd)
            os.close(fd)
            self.policy_fd = -1
            return
        for pol in received:
            self.apply_policy(pol)

    def apply_policy(self, pol: policy.Policy) -> None:
        """A new policy from SIGHUP: it holds for every script started from now on."""
        try:
            accounts = resolve_accounts(pol)
        except ValueError as exc:
            log("error", "new CGI policy refused, the previous one holds: %s", exc)
            return
        if pol.needs_setid and not self.setid:
            log("error", "new CGI policy needs run-as users but this daemon has given up the means;"
                " the previous policy holds")
            return
        self.policy, self.accounts = pol, accounts
        if self.setid and not pol.needs_setid and suexec is not None:
            try:
                suexec.drop_setid_capabilities()
                self.setid = False
            except OSError as exc:
                log("error", "cannot give up the run-as capabilities: %s", exc)
        log("info", "cgid daemon: new policy for %d location(s)", len(pol.locations))
        self._start_queued()

    # -- accepting -----------------------------------------------------------

    def _unlisten(self) -> None:
        if self.listening:
            self.listening = False
            if not self.accept_paused:
                try:
                    self.sel.unregister(self.listener)
                except (KeyError, ValueError):
                    pass

    def _accept(self, listener: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if not self._room() and not self._free_stale():
                self._out_of_fds("%d connections hold about %d of the %d descriptors they may"
                                 % (len(self.conns), self._fds_held(), self.fd_budget))
                return
            try:
                sock, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    if self._free_stale():
                        continue
                    self._out_of_fds(exc.strerror or str(exc))
                    return
                if self.refusals.allow("accept-error", time.monotonic())[0]:
                    log("error", "accept on ScriptSock failed: %s", exc)
                return
            self._admit(sock)
        if self.fd_burst:
            log("warning", "ScriptSock: accepting again after %d pause(s) at the file descriptor limit",
                self.fd_burst)
            self.fd_burst = 0
            self.accept_backoff = 0.0

    def _fds_held(self) -> int:
        """Descriptors the connections hold, or will once their request comes: the script's three each."""
        return len(self.conns) + wire.SPAWN_FDS * (len(self.reading) + len(self.queue))

    def _room(self) -> bool:
        """Whether one more connection, and the three descriptors it brings, fit in the budget.

        Counted, not found out from EMFILE: a connection accepted with no
        room left would have its descriptors cut off (MSG_CTRUNC) on
        arrival, failing a worker's request.
        """
        return self._fds_held() + 1 + wire.SPAWN_FDS <= self.fd_budget

    def _admit(self, sock: socket.socket) -> None:
        """Keep a connection from a worker; close any other at once."""
        try:
            peer = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
        except OSError:
            peer = (0, -1, -1)
        why = self._not_a_worker(sock, peer)
        if why:
            self._refuse(peer, why)
            sock.close()
            return
        sock.setblocking(False)
        conn = Conn(sock, peer)
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ, self._readable)
        self._reading(conn)

    def _reading(self, conn: Conn) -> None:
        """``conn`` starts sending a request: bounded in number and in time (REQUEST_READ_SECONDS)."""
        if conn.state is ConnState.IDLE:
            conn.advance(ConnEvent.READ)
        conn.accepted = time.monotonic()
        self._bound_reading(conn.peer[0])  # drops others: ``conn`` is not counted yet
        self.reading[conn] = None
        self.reading_by_peer.setdefault(conn.peer[0], {})[conn] = None
        conn.deadline = self.timers.call_at(conn.accepted + REQUEST_READ_SECONDS, self._read_timeout, conn)

    def _not_a_worker(self, sock: socket.socket, peer: tuple[int, int, int]) -> str:
        """Why the peer may not ask for scripts ("" when it is a worker of our master).

        A worker is a child of gunicorn's master, which no script can become:
        a script is the daemon's child, and whatever it starts (double
        forked, setsid) is re-parented to the daemon, the supervisor (both
        subreapers) or init, never to the master. The uid alone would let
        every script running as the workers' user in.
        """
        pid, uid, _gid = peer
        if uid not in (self.uid, 0):
            return "uid %d: only uid %d may connect" % (uid, self.uid)
        parent = self._peer_parent(sock, pid)
        if parent != self.master_pid:
            return ("its parent is %s, not gunicorn's master %d: only workers may ask for scripts"
                    % (parent if parent > 0 else "gone", self.master_pid))
        return ""

    def _peer_parent(self, sock: socket.socket, pid: int) -> int:
        """The parent pid of the process that connected; -1 if it is gone.

        Races: SO_PEERCRED gives the pid that called connect(). Read by pid,
        /proc could show another process if that one exited and its pid was
        reused (by a new worker) before the read. Where the kernel gives a
        pidfd of the connecting process itself (SO_PEERPIDFD, Linux 6.5),
        there is no such window: its parent comes through the pidfd
        (PIDFD_GET_INFO, Linux 6.13), or from /proc followed by a signal 0
        through the pidfd, which proves that process still held the pid
        after the read. On older kernels the window is the time between
        connect() and accept(), and needs the pid space to wrap meanwhile
        onto a process the master forks.

        Measured per connection (Linux 6.18, Python 3.11, best of 200
        batches of 500): 6 us with PIDFD_GET_INFO, 14 us with /proc and the
        signal, 8.5 us with /proc alone; a spawn costs about 1 ms.
        """
        pidfd = -1
        if self.pidfd_peers:
            try:
                pidfd = sock.getsockopt(socket.SOL_SOCKET, SO_PEERPIDFD)
            except OSError:
                self.pidfd_peers = False  # an older kernel
        if pidfd < 0:
            return parent_of(pid)
        try:
            if self.pidfd_info:
                try:
                    return pidfd_parent(pidfd)
                except OSError as exc:
                    if exc.errno == errno.ESRCH:
                        return -1
                    self.pidfd_info = False  # before Linux 6.13
            parent = parent_of(pid)
            try:
                signal.pidfd_send_signal(pidfd, 0)
            except ProcessLookupError:
                return -1
            except PermissionError:
                pass  # it exists
            return parent
        finally:
            os.close(pidfd)

    def _refuse(self, peer: tuple[int, int, int], why: str) -> None:
        """Log a refused peer once per pid, and at most a few lines a second in all."""
        allowed, suppressed = self.refusals.allow(("refused", peer[0]), time.monotonic())
        if allowed:
            log("warning", "refused ScriptSock connection from pid %d (uid %d): %s%s", peer[0], peer[1], why,
                " (%d similar lines left out)" % suppressed if suppressed else "")

    def _bound_reading(self, pid: int) -> None:
        """Room for one more connection still reading its request: drop the peer's oldest, or the oldest.

        A burst of accepts can come before any of those connections was
        read: the oldest few are read first, and only one whose request is
        still incomplete is dropped.
        """
        mine = self.reading_by_peer.get(pid)
        if mine is not None and len(mine) >= self.max_reading_per_peer and not self._read_oldest(mine,
                                                                                           self.max_reading_per_peer):
            self._drop_quietly(next(iter(mine)), ("peer", pid), "pid %d has %d connections still sending"
                               " their request" % (pid, len(mine)))
        if len(self.reading) >= self.max_reading and not self._read_oldest(self.reading, self.max_reading):
            self._drop_quietly(next(iter(self.reading)), "reading", "%d connections still sending their request"
                               % len(self.reading))

    def _read_oldest(self, waiting: dict[Conn, None], limit: int) -> bool:
        """Read the oldest few of ``waiting`` now; True once fewer than ``limit`` are left."""
        for conn in list(itertools.islice(waiting, READ_BEFORE_DROP)):
            # A read stops after the descriptors' segment: the frame's rest takes another.
            for _ in range(READS_PER_REQUEST):
                if conn not in waiting or conn.sock is None:
                    break
                self._readable(conn.sock)
            if len(waiting) < limit:
                return True
        return False

    def _drop_quietly(self, conn: Conn, key: object, why: str) -> None:
        """Drop ``conn`` for a flood: logged once per burst, not once per connection."""
        allowed, suppressed = self.refusals.allow(("flood", key), time.monotonic())
        if allowed:
            log("warning", "ScriptSock flood: %s; dropping the oldest%s", why,
                " (%d similar lines left out)" % suppressed if suppressed else "")
        self._close(conn)

    def _unread(self, conn: Conn) -> None:
        """``conn`` is no longer reading its request (spawned, queued or closed)."""
        if conn not in self.reading:
            return
        del self.reading[conn]
        mine = self.reading_by_peer.get(conn.peer[0])
        if mine is not None:
            mine.pop(conn, None)
            if not mine:
                del self.reading_by_peer[conn.peer[0]]

    def _free_stale(self) -> bool:
        """Out of descriptors: close connections still reading after STALE_READING_SECONDS; any closed?

        A worker sends its request at once, so these hold descriptors (their
        own, and the script's three) that a worker's request needs now.
        """
        now = time.monotonic()
        stale = []
        for conn in self.reading:  # oldest first
            if now - conn.accepted < STALE_READING_SECONDS or len(stale) >= 4:
                break
            stale.append(conn)
        for conn in stale:
            self._drop_quietly(conn, "stale", "out of file descriptors: a connection still sending its request"
                               " after %.1f s" % (now - conn.accepted))
        return bool(stale)

    def _out_of_fds(self, why: str) -> None:
        """At the descriptor limit with nothing stale to close: pause accepts, log once per burst.

        Without the pause the listener stays readable and the loop spins
        (logging each failure, as before). Connections wait in the backlog
        meanwhile and are accepted as scripts start or end. (Servers often
        keep a spare descriptor to accept and close at once; here that would
        fail a waiting worker's request, which the backlog lets wait.)
        """
        if not self.fd_burst:
            log("warning", "ScriptSock: at the file descriptor limit (%s; limit %d): pausing accepts,"
                " connections wait in the backlog", why, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self.fd_burst += 1
        self.accept_backoff = min(max(self.accept_backoff * 2, ACCEPT_BACKOFF_SECONDS[0]),
                                  ACCEPT_BACKOFF_SECONDS[1])
        if self.listening and not self.accept_paused:
            self.sel.unregister(self.listener)
            self.accept_paused = True
            self.timers.call_at(time.monotonic() + self.accept_backoff, self._resume_accept)

    def _maybe_resume(self) -> None:
        """Descriptors were freed: accept again now rather than at the end of the backoff."""
        if self.accept_paused and self._room():
            self._resume_accept()

    def _resume_accept(self) -> None:
        if self.accept_paused:
            self.accept_paused = False
            if self.listening:
                self.sel.register(self.listener, selectors.EVENT_READ, self._accept)

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
            if conn.state not in _TAKES_FDS or conn.fds:
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
            self._count_pending(conn)
            self._drop(conn, "bad frame: %s" % exc)
            return
        self._count_pending(conn)
        if self.pending_total > MAX_PENDING_BYTES and not self._bound_pending(conn):
            return
        fd = sock.fileno()
        for fr in frames:
            conn = self.conns.get(fd)  # a DONE hands the socket to the next request's record
            if conn is None:
                return
            if fr.kind == wire.SPAWN:
                self._on_spawn(conn, fr.payload)
            elif fr.kind == wire.KILL:
                self._on_kill(conn, fr.payload)
            elif fr.kind == wire.DONE:
                self._on_done(conn)
            elif fr.kind == wire.PING:
                self._on_ping(conn)
        conn = self.conns.get(fd)
        if conn is not None and conn.state is ConnState.IDLE and (conn.decoder.pending or conn.fds):
            self._reading(conn)  # a request is arriving: from now on it has the read deadline

    def _count_pending(self, conn: Conn) -> None:
        pending = conn.decoder.pending
        self.pending_total += pending - conn.counted
        conn.counted = pending

    def _bound_pending(self, conn: Conn) -> bool:
        """Partial frames over MAX_PENDING_BYTES in all: drop the oldest holders; False if ``conn`` went too.

        A worker's frame arrives whole within microseconds, so the oldest
        partial ones are the likeliest to be a peer holding memory on purpose.
        """
        for other in list(self.reading):
            if self.pending_total <= MAX_PENDING_BYTES:
                return True
            if other is not conn and other.counted:
                self._drop_quietly(other, "pending", "%d bytes of partial requests held (the limit is %d)"
                                   % (self.pending_total, MAX_PENDING_BYTES))
        if self.pending_total <= MAX_PENDING_BYTES:
            return True
        self._drop_quietly(conn, "pending", "%d bytes of partial requests held (the limit is %d)"
                           % (self.pending_total, MAX_PENDING_BYTES))
        return False

    def _on_spawn(self, conn: Conn, payload: bytes) -> None:
        if conn.state is not ConnState.READING and conn.state is not ConnState.IDLE:
            self._drop(conn, "second SPAWN on one connection")
            return
        try:
            req = wire.decode_spawn(payload)
        except wire.WireError as exc:
            self._fail(conn, wire.FAIL_REQUEST, 0, "error reading request on cgid socket: %s" % exc)
            return
        if self.stopping is not None and conn.state is ConnState.IDLE:
            self._retry_elsewhere(conn)  # a request on a kept connection that raced with the stop
            return
        if len(conn.fds) != wire.SPAWN_FDS:
            self._fail(conn, wire.FAIL_REQUEST, 0, "expected %d file descriptors, got %d"
                       % (wire.SPAWN_FDS, len(conn.fds)))
            return
        if req.master_pid != self.master_pid:
            self._fail(conn, wire.FAIL_REQUEST, 0, "CGI request received from wrong server instance "
                       "(master %d, expected %d); see script_sock" % (req.master_pid, self.master_pid))
            return
        if req.location not in self.policy.locations:
            self._fail(conn, wire.FAIL_REQUEST, 0, "CGI request for location %r, which the daemon's policy"
                       " does not have (a worker of an older configuration?)" % req.location)
            return
        conn.req = req
        self._unread(conn)
        max_scripts = self.policy.max_scripts
        if self.stopping is not None:
            self._fail(conn, wire.FAIL_SHUTDOWN, 0, "the CGI daemon is stopping")
        elif max_scripts and len(self.running) >= max_scripts:
            conn.advance(ConnEvent.QUEUE)
            self._set_deadline(conn, time.monotonic() + self.policy.queue_timeout_ms / 1000.0, self._queue_timeout)
            self.queue.append(conn)
        else:
            self._spawn(conn)

    def _launch(self, conn: Conn) -> tuple[wire.SpawnRequest, Callable[[int], int]]:
        """The request with the policy's limits in it, and how to start it; raises suexec.Refusal."""
        asked = conn.req
        assert asked is not None
        pol = self.policy
        loc = pol.locations.get(asked.location)
        if loc is None:  # a reload removed it while the request queued
            raise ValueError("its location %r is no longer configured" % asked.location)
        req = wire.SpawnRequest(asked.filename, asked.cwd, asked.argv, asked.env, asked.location,
                                policy.max_runtime_ms(loc, asked.max_runtime_ms), asked.master_pid,
                                pol.rlimit_cpu, pol.rlimit_mem, pol.rlimit_nproc)
        fds = conn.fds
        run_as = self.accounts.get(asked.location)
        if run_as is None:
            return req, lambda cgroup_fd: spawn.spawn_script(req, fds, cgroup_fd=cgroup_fd)
        # suEXEC checks the script: for a configured interpreter, the file it is given.
        script = req.argv[1] if os.fsdecode(req.filename) in loc.interpreters and len(req.argv) > 1 \
            else req.filename
        suexec.check(run_as, script, os.fsencode(loc.root))
        keep = tuple(os.fsencode(name) for name in loc.env_keep)
        return req, lambda cgroup_fd: spawn.spawn_script(req, fds, run_as=run_as, env_keep=keep, cgroup_fd=cgroup_fd)

    def _spawn(self, conn: Conn) -> None:
        asked = conn.req
        assert asked is not None
        try:
            req, start = self._launch(conn)
        except ValueError as exc:
            self._fail(conn, wire.FAIL_REQUEST, 0, "error spawning CGI child %r: %s"
                       % (asked.filename.decode("utf-8", "replace"), exc))
            return
        except Refusal as exc:
            # The worker logs it at error level, with its client: here only at info.
            status, message = getattr(exc, "status", 500), getattr(exc, "message", str(exc))
            self._fail(conn, wire.FAIL_REFUSED, status, "suexec policy violation: %s" % message, level="info")
            return
        conn.req = req
        conn.born = containment.boottime()
        try:
            pid, cage = self.containment.spawn(start)
        except OSError as exc:
            code = exc.errno or 0
            self._fail(conn, wire.FAIL_EXEC, code, "error spawning CGI child: exec of %r failed: %s"
                       % (req.filename.decode("utf-8", "replace"), exc.strerror or exc))
            return
        except (ValueError, containment.ContainmentError) as exc:
            self._fail(conn, wire.FAIL_EXEC, 0, "error spawning CGI child %r: %s"
                       % (req.filename.decode("utf-8", "replace"), exc))
            return
        conn.close_fds()
        self._maybe_resume()
        conn.pid = pid
        conn.cage = cage
        conn.started = time.monotonic()
        conn.advance(ConnEvent.SPAWN)
        self._set_deadline(conn, conn.started + req.max_runtime_ms / 1000.0 if req.max_runtime_ms else None,
                           self._max_runtime)
        self.running[pid] = conn
        self._send(conn, wire.encode_started(pid))

    def _on_kill(self, conn: Conn, payload: bytes) -> None:
        try:
            reason = wire.decode_kill(payload)
        except wire.WireError as exc:
            self._drop(conn, "bad KILL frame: %s" % exc)
            return
        if conn.state is ConnState.RUNNING:
            conn.kill_reason = reason or wire.REASON_KILLED
            self._end_script(conn)
        elif conn.state is ConnState.QUEUED:
            self.queue.remove(conn)
            self._close(conn)

    def _on_ping(self, conn: Conn) -> None:
        """The health endpoint's probe: answer with our pid; the worker closes the connection."""
        if conn.state is not ConnState.READING or conn.fds:
            self._drop(conn, "PING on a connection that carries a request")
            return
        self._send(conn, wire.encode_pong(os.getpid()))

    def _on_done(self, conn: Conn) -> None:
        """The request is over: end what its script left, and let the connection take the next one."""
        if conn.state is not ConnState.EXITED:
            self._drop(conn, "DONE while the request is %s (only after its script's exit report)"
                       % conn.state.value)
            return
        sock = conn.sock
        assert sock is not None
        successor = Conn(sock, conn.peer, ConnState.IDLE)
        successor.decoder, successor.counted, successor.fds = conn.decoder, conn.counted, conn.fds
        conn.fds, conn.counted, conn.sock = [], 0, None
        self.conns[sock.fileno()] = successor
        self._unread(conn)
        self.timers.cancel(conn.deadline)
        conn.deadline = None
        conn.advance(ConnEvent.CLOSE)
        self.sweep_due = True
        self._ended(conn, ConnState.EXITED)

    def _closed_by_peer(self, conn: Conn) -> None:
        """The worker is gone (its request ended, or it died): end what is left of the request."""
        state = conn.state
        if state is ConnState.RUNNING:
            # The script has nobody left to talk to.
            conn.kill_reason = conn.kill_reason or wire.REASON_DISCONNECT
            log("info", "worker closed the connection of running CGI script %s: killing its process group",
                conn.describe())
            self._end_script(conn)
        elif state is ConnState.QUEUED:
            self.queue.remove(conn)
        elif state is ConnState.READING and (conn.decoder.pending or conn.fds):
            log("error", "dropped ScriptSock connection from pid %d: closed in the middle of a request"
                " (%d bytes, %d descriptors)", conn.peer[0], conn.decoder.pending, len(conn.fds))
        self._close(conn)
        self._ended(conn, state)

    def _ended(self, conn: Conn, state: ConnState) -> None:
        """The request that was in ``state`` is over: what its exited script left is a leftover."""
        if state is ConnState.EXITED and conn.leftovers and self.containment.alive(self._group_of(conn), conn.cage):
            if self._end_script(conn):
                log("info", "killing processes left behind by CGI script %s", conn.describe())
        self._settle(conn)

    # -- scripts -------------------------------------------------------------

    def _scripts(self) -> set[Conn]:
        """Every connection whose script, or what it left, we still answer for."""
        found = set(self.running.values()) | self.ending
        found.update(c for c in self.conns.values() if c.state is ConnState.EXITED and c.leftovers)
        return found

    def _group_of(self, conn: Conn) -> int:
        """The script's process group, or 0 when that number may be someone else's now.

        Until the script is reaped its pid cannot be reused; afterwards a new
        script may have been given the same number.
        """
        current = self.running.get(conn.pid)
        return conn.pid if conn.pid > 1 and (current is None or current is conn) else 0

    def _end_script(self, conn: Conn) -> bool:
        """SIGTERM the script's processes now, SIGKILL after its grace; False if none is left."""
        if conn.kill_timer is not None:
            return True  # already on its way
        if not self.containment.term(self._group_of(conn), conn.cage):
            return False
        conn.kill_timer = self.timers.call_at(time.monotonic() + self._grace(), self._kill_now, conn)
        return True

    def _kill_now(self, conn: Conn) -> None:
        conn.kill_timer = None
        group = self._group_of(conn)
        if self.containment.alive(group, conn.cage):
            log("warning", "CGI process group %d didn't exit, sending SIGKILL", conn.pid)
            self.containment.kill(group, conn.cage)
        self._settle(conn)

    def _settle(self, conn: Conn) -> None:
        """Once the worker is gone and the script reaped: free its containment, or try again soon."""
        if conn.state is not ConnState.DONE or conn.pid == 0:
            return
        if conn.kill_timer is not None:
            self.ending.add(conn)  # its grace runs; _kill_now settles it
            return
        if self.containment.release(conn.cage):
            self.ending.discard(conn)
            conn.cage = None
            return
        self.ending.add(conn)
        self._set_deadline(conn, time.monotonic() + conn.release_delay, self._settle)
        conn.release_delay = min(conn.release_delay * 2, RELEASE_RETRY_SECONDS[1])

    def _check_ending(self) -> None:
        """A process of ours was reaped: settle each ended request whose processes are all gone."""
        for conn in list(self.ending):
            if conn.kill_timer is not None and not self.containment.alive(self._group_of(conn), conn.cage):
                self.timers.cancel(conn.kill_timer)
                conn.kill_timer = None
                self._settle(conn)

    def _reap(self) -> None:
        reaped_other = False
        while True:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
            if pid == 0:
                break
            self.sweep_due = True
            conn = self.running.pop(pid, None)
            if conn is None:
                reaped_other = True  # an orphan adopted as subreaper
                continue
            conn.advance(ConnEvent.REAP)
            self.timers.cancel(conn.deadline)
            conn.deadline = None
            # Checked now, while no other process can take this pgid: once the
            # group is empty its number may go to a new process.
            conn.leftovers = self.containment.alive(pid, conn.cage)
            if not conn.leftovers:
                self.timers.cancel(conn.kill_timer)
                conn.kill_timer = None
            info = wire.Exited(
                wait_status=status,
                wall_us=int((time.monotonic() - conn.started) * 1e6),
                utime_us=int(usage.ru_utime * 1e6),
                stime_us=int(usage.ru_stime * 1e6),
                maxrss_kb=int(usage.ru_maxrss),
                reason=conn.kill_reason,
            )
            if conn.state is ConnState.EXITED:
                self._send(conn, wire.encode_exited(info))
                if (conn.state is ConnState.EXITED and not conn.leftovers
                        and self.containment.release(conn.cage, empty=True)):
                    conn.cage = None  # empty (checked just above): freed now, not when the worker leaves
            else:
                if conn.leftovers:
                    self._end_script(conn)
                self._settle(conn)
            self._start_queued()
        if reaped_other and self.ending:
            self._check_ending()

    def _start_queued(self) -> None:
        while self.queue and self.stopping is None:
            max_scripts = self.policy.max_scripts
            if max_scripts and len(self.running) >= max_scripts:
                return
            self._spawn(self.queue.popleft())

    def _sweep(self) -> None:
        """Kill the children of ours that are no script's and that no request in progress may own.

        Only in process-group mode: a process that left its script's group
        (setsid, a double fork) is re-parented to us when its parent dies.
        One read of /proc when every child is a script.
        """
        self.sweep_due = False
        if not self.containment.sweeps or self.stop_now:
            return
        unknown = [pid for pid in containment.children(os.getpid()) if pid not in self.running]
        if not unknown:
            return
        own_groups = {c.pid for c in self._scripts()}  # ended by their own request or kill timer
        oldest = min((c.born for c in self.conns.values() if c.state in _IN_PROGRESS), default=None)
        leftovers = []
        for pid in unknown:
            info = containment.proc_info(pid)
            if info is None or info.state in ("Z", "X") or info.pgrp in own_groups:
                continue
            if oldest is not None and info.born_by >= oldest:
                continue  # may belong to a request still in progress: judged when it ends
            leftovers.append(pid)
        if leftovers:
            killed = containment.kill_trees(leftovers)
            if killed:
                self.timers.call_at(time.monotonic() + RESWEEP_SECONDS, self._request_sweep)
            new = sorted(set(killed) - self.swept)  # a killed process may not be gone by the next sweep
            self.swept = set(killed)
            if new:
                log("warning", "killed %d process(es) that CGI scripts left outside their process group: %s",
                    len(new), " ".join(str(p) for p in new))

    def _request_sweep(self) -> None:
        self.sweep_due = True

    def _finish(self) -> None:
        """Stopped: nothing a script started may outlive the daemon."""
        for conn in self._scripts():
            self.containment.kill(self._group_of(conn), conn.cage)
        killed = containment.kill_trees(containment.children(os.getpid()))
        if killed:
            log("info", "killed %d process(es) left under the stopping cgid daemon", len(killed))
        self._reap()
        for conn in self._scripts() | set(self.conns.values()):
            self.timers.cancel(conn.kill_timer)
            conn.kill_timer = None
        self.containment.finish()

    # -- timers --------------------------------------------------------------

    def _set_deadline(self, conn: Conn, when: float | None, callback: Callable[[Conn], None]) -> None:
        self.timers.cancel(conn.deadline)
        conn.deadline = None if when is None else self.timers.call_at(when, callback, conn)

    def _read_timeout(self, conn: Conn) -> None:
        conn.deadline = None
        if conn.state is ConnState.READING:
            self._drop(conn, "incomplete request after %.0f s" % REQUEST_READ_SECONDS)

    def _queue_timeout(self, conn: Conn) -> None:
        conn.deadline = None
        if conn.state is ConnState.QUEUED:
            self.queue.remove(conn)
            self._fail(conn, wire.FAIL_BUSY, errno.EAGAIN,
                       "cgi_max_scripts reached; no slot within the queue timeout")

    def _max_runtime(self, conn: Conn) -> None:
        conn.deadline = None
        if conn.state is ConnState.RUNNING:
            log("warning", "CGI script %s exceeded cgi_max_runtime: killing its process group", conn.describe())
            conn.kill_reason = wire.REASON_MAX_RUNTIME
            self._end_script(conn)

    # -- connection plumbing -------------------------------------------------

    def _send(self, conn: Conn, data: bytes) -> None:
        try:
            sent = conn.sock.send(data) if conn.sock is not None else -1
        except OSError:
            sent = -1
        if sent != len(data):
            # Replies are a few bytes on an otherwise idle socket: a short
            # write means the worker stopped reading, so it is gone.
            log("debug", "could not send reply to worker for %s", conn.describe())
            self._closed_by_peer(conn)

    def _fail(self, conn: Conn, code: int, err: int, message: str, level: str = "") -> None:
        log(level or ("error" if code != wire.FAIL_BUSY else "warning"), "%s", message)
        self._answer_and_close(conn, wire.encode_failed(code, err, message))

    def _retry_elsewhere(self, conn: Conn) -> None:
        """Close a kept connection, telling its worker that whatever it sent was not started.

        The worker then sends it on a new connection, which waits in the
        backlog for the next daemon: a stop loses no request.
        """
        self._answer_and_close(conn, wire.encode_failed(wire.FAIL_RETRY, 0, "the CGI daemon is stopping"))

    def _answer_and_close(self, conn: Conn, frame: bytes) -> None:
        """Send a last frame if the socket takes it at once, then close."""
        try:
            if conn.sock is not None:
                conn.sock.send(frame)
        except OSError:
            pass
        self._close(conn)

    def _drop(self, conn: Conn, why: str) -> None:
        log("error", "dropped ScriptSock connection from pid %d: %s", conn.peer[0], why)
        if conn.state is ConnState.RUNNING:
            self._closed_by_peer(conn)
        else:
            if conn.state is ConnState.QUEUED and conn in self.queue:
                self.queue.remove(conn)
            self._close(conn)

    def _close(self, conn: Conn) -> None:
        """Close the worker's connection (the CLOSE event); the script, if any, is the caller's."""
        conn.close_fds()
        if conn.sock is None:
            return  # its request was DONE: the socket is its successor's
        fd = conn.sock.fileno()
        if fd < 0:
            return
        self._unread(conn)
        self.pending_total -= conn.counted
        conn.counted = 0
        self.conns.pop(fd, None)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        if conn.state in _CONNECTED:
            conn.advance(ConnEvent.CLOSE)
            self.sweep_due = True
        self.timers.cancel(conn.deadline)
        conn.deadline = None
        self._maybe_resume()


def _fds_from(ancdata: Iterable[tuple[int, int, bytes]]) -> list[int]:
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
