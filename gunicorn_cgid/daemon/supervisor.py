"""The supervisor: owns the listening ScriptSock and keeps a daemon running behind it.

Runs in its own small interpreter, started by gunicorn's master in
``on_starting``. gunicorn reaps unknown children silently with
``waitpid(-1)``, so the daemon is the supervisor's child, not the master's:
the supervisor restarts it when it dies, and because the supervisor holds the
listening socket, requests that arrive during the restart wait in its backlog
instead of failing. It watches the master through a pipe (EOF when the master
is gone, by any means) and then takes the daemon and every script with it.

Lifecycle of the daemon: STARTING -> RUNNING -> (died) BACKOFF -> STARTING;
a daemon that cannot initialise (exit 254, Apache's DAEMON_STARTUP_ERROR) is
FATAL: no restart loop.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import stat
import sys
import time

from gunicorn_cgid.daemon import spawn
from gunicorn_cgid.daemon.log import log
from gunicorn_cgid.daemon.server import Daemon  # imported once here, not in every restarted daemon
from gunicorn_cgid.daemon.signals import SignalWakeup

DAEMON_STARTUP_ERROR = 254
LISTEN_BACKLOG = 1024
READY_TIMEOUT_SECONDS = 10.0
MIN_UPTIME_SECONDS = 1.0       # a daemon dying sooner than this backs off
MAX_BACKOFF_SECONDS = 0.5
STOP_TIMEOUT_SECONDS = 30.0
# Scripts of a dead daemon: SIGTERM after a short delay, so that their workers
# see the daemon's connection close before the script's output does (and
# answer 502, not "End of script output before headers"); a spawn the daemon
# had not finished also holds copies of its sockets until it execs. Then
# SIGKILL after the grace.
ORPHAN_TERM_DELAY_SECONDS = 0.1
ORPHAN_KILL_GRACE_SECONDS = 3.0
SUN_PATH_MAX = 107


class SetupError(Exception):
    """The ScriptSock cannot be created; the message says how to fix it."""


def prepare_socket(path: str, uid: int, gid: int) -> socket.socket:
    """Bind the ScriptSock so that only the workers' user can connect.

    Refuses a directory that other users can write to (they could replace
    the socket), replaces a stale socket file, refuses a live one.
    """
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise SetupError("script_sock path %r is %d bytes long; a Unix socket path holds at most %d:"
                         " choose a shorter script_sock" % (path, len(os.fsencode(path)), SUN_PATH_MAX))
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        try:
            os.makedirs(directory, mode=0o755)
        except OSError as exc:
            raise SetupError("cannot create the script_sock directory %r: %s" % (directory, exc)) from None
    st = os.stat(directory)
    if st.st_mode & stat.S_IWOTH:
        raise SetupError("the script_sock directory %r is writable by other users (mode %o): another user"
                         " could replace the socket; use a directory only its owner can write to"
                         " (chmod o-w %s) or set script_sock elsewhere"
                         % (directory, stat.S_IMODE(st.st_mode), directory))
    if os.path.lexists(path):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)  # stale: nobody listens on it any more
        except OSError as exc:
            raise SetupError("script_sock %r exists and cannot be checked: %s" % (path, exc)) from None
        else:
            raise SetupError("script_sock %r is in use by another running instance" % path)
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise SetupError("cannot bind script_sock %r: %s" % (path, exc)) from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)
    sock.listen(LISTEN_BACKLOG)
    return sock


class Supervisor:
    def __init__(self, listener: socket.socket, path: str, uid: int, gid: int,
                 master_pid: int, life_fd: int) -> None:
        self.listener = listener
        self.path = path
        self.uid = uid
        self.gid = gid
        self.master_pid = master_pid
        self.life_fd = life_fd
        self.daemon_pid = 0
        self.daemon_started = 0.0
        self.backoff = 0.0
        self.restart_at: float | None = None
        self.stopping = False
        self.wakeup = SignalWakeup()
        self.sel: selectors.BaseSelector | None = None
        self.ready_fds: set[int] = set()      # readiness pipes of restarted daemons
        self.orphan_term_at: float | None = None
        self.orphan_kill_at: float | None = None
        self.sock_ino = _inode(path)           # to remove only the socket we bound

    def start_daemon(self) -> int:
        """Fork the daemon; returns the read end of its readiness pipe."""
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the daemon
            code = 0
            try:
                os.close(ready_r)
                code = run_daemon(self, ready_w)
            except BaseException as exc:  # the child must never return into the supervisor
                log("critical", "cgid daemon crashed: %r", exc)
                code = 1
            finally:
                os._exit(code)
        os.close(ready_w)
        self.daemon_pid = pid
        self.daemon_started = time.monotonic()
        return ready_r

    def wait_ready(self, ready_r: int) -> str | None:
        """None when the first daemon is up, else why it is not."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        sel = selectors.DefaultSelector()
        sel.register(ready_r, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if sel.select(0.1):
                    data = os.read(ready_r, 512)
                    if data.startswith(b"ok"):
                        return None
                    pid, status = os.waitpid(self.daemon_pid, 0)
                    return data.decode("utf-8", "replace").strip() or "daemon exited with status %d" % status
            return "the daemon did not start within %.0f s" % READY_TIMEOUT_SECONDS
        finally:
            sel.close()
            os.close(ready_r)

    def serve(self) -> int:
        self.wakeup.install()
        self.sel = sel = selectors.DefaultSelector()
        sel.register(self.wakeup.reader, selectors.EVENT_READ, "wake")
        sel.register(self.life_fd, selectors.EVENT_READ, "life")
        if self._reap():  # a signal may have come before the handlers existed
            self._remove_socket()
            return 1
        while True:
            timeout = 1.0
            for when in (self.restart_at, self.orphan_term_at, self.orphan_kill_at):
                if when is not None:
                    timeout = max(0.0, min(timeout, when - time.monotonic()))
            for key, _ in sel.select(timeout):
                if isinstance(key.data, int):
                    # A restarted daemon's readiness report (or EOF if it died first).
                    self.ready_fds.discard(key.data)
                    sel.unregister(key.data)
                    os.close(key.data)
                elif key.data == "life":
                    if not os.read(self.life_fd, 64):
                        log("info", "gunicorn master %d is gone: stopping the CGI daemon and its scripts",
                            self.master_pid)
                        return self.stop(fast=True)
                else:
                    sigs = self.wakeup.received()
                    if signal.SIGCHLD in sigs:
                        fatal = self._reap()
                        if fatal:
                            self._remove_socket()
                            return 1
                    if signal.SIGINT in sigs:
                        return self.stop(fast=True)
                    if signal.SIGTERM in sigs:
                        return self.stop(fast=False)
            if os.getppid() != self.master_pid:
                log("info", "gunicorn master %d is gone: stopping the CGI daemon", self.master_pid)
                return self.stop(fast=True)
            if self.orphan_term_at is not None and time.monotonic() >= self.orphan_term_at:
                self.orphan_term_at = None
                count = self.kill_orphans(signal.SIGTERM)
                if count:
                    log("warning", "killing %d process group(s) left by the dead cgid daemon", count)
                    self.orphan_kill_at = time.monotonic() + ORPHAN_KILL_GRACE_SECONDS
            if self.orphan_kill_at is not None and time.monotonic() >= self.orphan_kill_at:
                self.orphan_kill_at = None
                if self.kill_orphans(signal.SIGKILL):
                    log("warning", "scripts of the dead cgid daemon didn't exit, sent SIGKILL")
            if self.restart_at is not None and time.monotonic() >= self.restart_at:
                self.restart_at = None
                # Kept open until the daemon reports: closing it at once would
                # make the daemon's readiness write fail with EPIPE.
                ready = self.start_daemon()
                self.ready_fds.add(ready)
                sel.register(ready, selectors.EVENT_READ, ready)

    def _reap(self) -> bool:
        """Reap children; schedule a restart if the daemon died. True if it is FATAL."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return False
            if pid != self.daemon_pid:
                continue  # a script orphaned by a dead daemon (we are its subreaper)
            self.daemon_pid = 0
            if self.stopping:
                continue
            # Its scripts are ours now (we are the subreaper) and nobody will
            # ever report their exit: their workers have lost the connection.
            self.orphan_term_at = time.monotonic() + ORPHAN_TERM_DELAY_SECONDS
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == DAEMON_STARTUP_ERROR:
                log("critical", "cgid daemon failed to initialize; not restarting it")
                return True
            uptime = time.monotonic() - self.daemon_started
            self.backoff = 0.0 if uptime >= MIN_UPTIME_SECONDS else min(
                MAX_BACKOFF_SECONDS, max(0.05, self.backoff * 2))
            log("error", "cgid daemon process died (%s), restarting%s", _describe_status(status),
                " in %.2f s" % self.backoff if self.backoff else "")
            self.restart_at = time.monotonic() + self.backoff

    def stop(self, fast: bool) -> int:
        self.stopping = True
        if self.daemon_pid:
            try:
                os.kill(self.daemon_pid, signal.SIGINT if fast else signal.SIGTERM)
            except ProcessLookupError:
                pass
            deadline = time.monotonic() + (2.0 if fast else STOP_TIMEOUT_SECONDS)
            while time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(self.daemon_pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if pid:
                    break
                time.sleep(0.01)
            else:
                os.kill(self.daemon_pid, signal.SIGKILL)
        # Whatever the daemon left behind (scripts it had no time to kill,
        # leftovers re-parented to us) goes with it.
        self.kill_orphans(signal.SIGKILL)
        self._remove_socket()
        return 0

    def kill_orphans(self, sig: int) -> int:
        """Signal the process group of each child that is not the daemon; returns how many."""
        own_group = os.getpgrp()
        count = 0
        for pid in _children(os.getpid()):
            if pid == self.daemon_pid:
                continue
            pgid = _pgid(pid)
            if pgid <= 0:
                continue
            if spawn.signal_group(pgid, sig) if pgid != own_group else _signal(pid, sig):
                count += 1
        return count

    def _remove_socket(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log("error", "cannot remove script_sock %r: %s", self.path, exc)


def run_daemon(sup: Supervisor, ready_w: int) -> int:
    """In the forked daemon: drop privileges, then serve until told to stop."""
    sup.wakeup.close()
    os.close(sup.life_fd)
    if sup.sel is not None:
        sup.sel.close()
    for fd in sup.ready_fds:
        os.close(fd)
    spawn.die_with_parent(signal.SIGINT)
    if os.getppid() == 1:
        return 0
    try:
        spawn.drop_privileges(sup.uid, sup.gid)
        spawn.become_subreaper()
    except OSError as exc:
        msg = "cgid daemon cannot drop privileges to %s: %s" % (spawn.describe_ids(sup.uid, sup.gid), exc)
        log("critical", "%s", msg)
        _report(ready_w, msg.encode())
        return DAEMON_STARTUP_ERROR
    _report(ready_w, b"ok")
    supervisor_pid = os.getppid()
    daemon = Daemon(sup.listener, sup.master_pid)
    log("info", "cgid daemon %d serving %s as %s", os.getpid(), sup.path,
        spawn.describe_ids(os.geteuid(), os.getegid()))
    daemon.serve()
    if os.getppid() != supervisor_pid and sup.sock_ino and _inode(sup.path) == sup.sock_ino:
        # The supervisor was killed: nobody else will remove the socket it bound.
        sup._remove_socket()
    return 0


def _report(ready_w: int, data: bytes) -> None:
    """Tell the supervisor how the start went; it may have stopped listening."""
    try:
        os.write(ready_w, data)
    except OSError:
        pass
    finally:
        os.close(ready_w)


def _inode(path: str) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0


def _children(pid: int) -> list[int]:
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        pass
    out = []  # kernels without CONFIG_PROC_CHILDREN
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _stat_fields(int(entry))[1:2] == [str(pid)]:
            out.append(int(entry))
    return out


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/PID/stat after the command name: state, ppid, pgrp..."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return 0


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.WEXITSTATUS(status)


def main(argv: list[str]) -> int:
    """Entry point: ``python -m gunicorn_cgid.daemon PATH UID GID MASTER_PID LIFE_FD [LOGFILE] [LEVEL]``.

    Prints ``READY`` (or ``ERROR: why``) on stdout once, then closes it.
    """
    path, uid, gid, master_pid, life_fd = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    logfile = argv[5] if len(argv) > 5 else "-"
    if len(argv) > 6:
        from gunicorn_cgid.daemon import log as logmod
        logmod.set_level(argv[6])
    if logfile != "-":
        try:
            fd = os.open(logfile, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            os.dup2(fd, 2)
            os.close(fd)
        except OSError:
            pass
    out = os.fdopen(os.dup(1), "w")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    spawn.die_with_parent(signal.SIGINT)
    spawn.become_subreaper()
    try:
        listener = prepare_socket(path, uid, gid)
    except SetupError as exc:
        out.write("ERROR: %s\n" % exc)
        out.close()
        return 1
    sup = Supervisor(listener, path, uid, gid, master_pid, life_fd)
    error = sup.wait_ready(sup.start_daemon())
    if error:
        sup._remove_socket()
        out.write("ERROR: %s\n" % error)
        out.close()
        return 1
    out.write("READY %d\n" % sup.daemon_pid)
    out.close()
    return sup.serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
