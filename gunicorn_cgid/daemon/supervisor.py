"""The supervisor: owns the listening ScriptSock and keeps a daemon running behind it.

Runs in its own small interpreter, started by gunicorn's master in
``on_starting`` (and again by the master's watcher if it ever dies).
gunicorn reaps unknown children silently with ``waitpid(-1)``, so the daemon
is the supervisor's child, not the master's: the supervisor restarts it when
it dies, and because the supervisor holds the listening socket, requests
that arrive during a quick restart wait in its backlog instead of failing.
It watches the master through a pipe (EOF when the master is gone, by any
means) and then takes the daemon and every script with it.

The daemon's lifecycle is ``lifecycle.DaemonLifecycle``: STARTING, RUNNING,
BACKOFF (restarts back off from 0.1 s, doubling to 10 s), FATAL (five deaths
at start in a row, or a daemon that cannot initialise: one error line, no
more restarts), STOPPING. While there is no daemon to wait for (FATAL, or a
backoff of a second or more) the supervisor answers each connection itself
with a FAILED frame, so workers answer 503 at once instead of waiting. SIGHUP
(sent by the master's ``on_reload``) starts again from FATAL or BACKOFF.

The policy (``policy.py``: limits and run-as accounts) comes from the master
on the life pipe, first thing at start and again before each SIGHUP; the
supervisor checks it (never root, accounts that exist) and passes it on to
its daemon through a pipe of their own. The socket's directory must belong
to the user that starts gunicorn and be writable by no one else
(``check_socket_directory``), so no script can replace the socket.
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import socket
import stat
import sys
import time
from typing import Any

from gunicorn_cgid import wire
from gunicorn_cgid.daemon import containment, policy, spawn
from gunicorn_cgid.daemon.lifecycle import DaemonEvent, DaemonLifecycle, DaemonState
from gunicorn_cgid.daemon.log import log
from gunicorn_cgid.daemon.server import Daemon, resolve_accounts  # imported once here, not in every daemon
from gunicorn_cgid.daemon.signals import SignalWakeup
from gunicorn_cgid.daemon.timers import Timer, Timers

DAEMON_STARTUP_ERROR = 254
LISTEN_BACKLOG = 1024
READY_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 30.0
MASTER_CHECK_SECONDS = 1.0     # the master is also checked this often (besides the life pipe)
BACKLOG_WAIT_SECONDS = 1.0     # a restart sooner than this: requests wait for it in the backlog
TAKEOVER_WAIT_SECONDS = 0.5    # how long a new supervisor waits for an orphaned daemon's socket to go
# Scripts of a dead daemon: SIGTERM after a short delay, so that their workers
# see the daemon's connection close before the script's output does (and
# answer 502, not "End of script output before headers"); a spawn the daemon
# had not finished also holds copies of its sockets until it execs. Then
# SIGKILL after the grace.
ORPHAN_TERM_DELAY_SECONDS = 0.1
ORPHAN_KILL_GRACE_SECONDS = 3.0
CGROUP_REMOVE_TRIES = 100      # every 50 ms: a dead daemon's cgroup is removed once empty
SUN_PATH_MAX = 107
_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH

try:  # process names in ps and top, as gunicorn's own (issue #13)
    from setproctitle import setproctitle as _setproctitle
except ImportError:
    _setproctitle = None


def set_title(title: str) -> None:
    """``gunicorn-cgid: supervisor [master 1234]`` in ps, when setproctitle is installed."""
    if _setproctitle is not None:
        try:
            _setproctitle(title)
        except Exception:  # a name is never worth failing for
            pass


class SetupError(Exception):
    """The ScriptSock cannot be created; the message says how to fix it."""


def _owner(uid: int) -> str:
    try:
        import pwd
        return "%s (uid %d)" % (pwd.getpwuid(uid).pw_name, uid)
    except (KeyError, ImportError):
        return "uid %d" % uid


def check_socket_directory(directory: str, workers_uid: int) -> None:
    """Refuse a socket directory where anyone but the user starting gunicorn could replace the socket.

    The directory itself must belong to that user (root, for a root master)
    and be writable by no one else: whoever can write there can rename the
    socket away and bind their own, and then receives every request,
    ``Authorization`` headers and bodies included. For a root master, no
    directory above it may belong to the workers' user (who could rename
    the whole directory), nor be writable by group or others unless it is
    sticky: in a sticky directory (``/tmp``, a ``1777`` emptyDir) nobody can
    rename an entry they do not own, so ``run/cgid/cgisock`` under such a
    ``run/`` is safe. A master that is not root runs its scripts as its own
    user, which owns the directory anyway: there only the directory's own
    mode is checked, against other users (the peer check keeps scripts out).
    """
    euid = os.geteuid()
    st = os.stat(directory)
    if st.st_uid != euid:
        raise SetupError(
            "the script_sock directory %s belongs to %s, not to %s, who starts gunicorn: its owner could"
            " replace the socket; chown %d %s (and chmod 755 it), or set script_sock in a directory of"
            " its own such as run/cgid/cgisock" % (directory, _owner(st.st_uid), _owner(euid), euid, directory))
    if st.st_mode & _WRITABLE_BY_OTHERS:
        raise SetupError(
            "the script_sock directory %s is writable by other users (mode %o): another user could replace"
            " the socket; chmod 755 %s, or set script_sock in a directory only its owner can write to"
            " such as run/cgid/cgisock" % (directory, stat.S_IMODE(st.st_mode), directory))
    if euid != 0:
        return
    seen = set()
    for start in (os.path.abspath(directory), os.path.realpath(directory)):
        path = start
        while os.path.dirname(path) != path:
            path = os.path.dirname(path)
            if path in seen:
                continue
            seen.add(path)
            st = os.stat(path)
            if workers_uid != 0 and st.st_uid == workers_uid:
                raise SetupError(
                    "%s, above the script_sock directory %s, belongs to the workers' user %s, whose"
                    " scripts could move the socket's directory away; chown it to root, or set"
                    " script_sock elsewhere" % (path, directory, _owner(workers_uid)))
            if st.st_mode & _WRITABLE_BY_OTHERS and not st.st_mode & stat.S_ISVTX:
                raise SetupError(
                    "%s, above the script_sock directory %s, is writable by other users (mode %o) and not"
                    " sticky: they could move the socket's directory away; chmod o-w,g-w %s (or +t), or"
                    " set script_sock elsewhere" % (path, directory, stat.S_IMODE(st.st_mode), path))


def prepare_socket(path: str, uid: int, gid: int, replace_live: bool = False) -> socket.socket:
    """Bind the ScriptSock so that only the workers' user can connect.

    Creates a missing directory (mode 0755, the starting user's), refuses
    one where others could replace the socket (``check_socket_directory``),
    replaces a stale socket file, refuses a live one unless
    ``replace_live``: a supervisor started again by the same master takes
    over from the daemon of the one that died (it waits a moment for that
    orphaned daemon to remove its socket on the way out).
    """
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise SetupError("script_sock path %r is %d bytes long; a Unix socket path holds at most %d:"
                         " choose a shorter script_sock" % (path, len(os.fsencode(path)), SUN_PATH_MAX))
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        old_umask = os.umask(0o022)  # parents created on the way get 0755 too
        try:
            os.makedirs(directory, mode=0o755)
        except OSError as exc:
            raise SetupError("cannot create the script_sock directory %r: %s" % (directory, exc)) from None
        finally:
            os.umask(old_umask)
    check_socket_directory(directory, uid)
    if replace_live:
        deadline = time.monotonic() + TAKEOVER_WAIT_SECONDS
        while os.path.lexists(path) and _probe(path) == "live" and time.monotonic() < deadline:
            time.sleep(0.01)
    if os.path.lexists(path):
        state = _probe(path)
        if state == "live" and not replace_live:
            raise SetupError("script_sock %r is in use by another running instance" % path)
        if state not in ("live", "stale"):
            raise SetupError("script_sock %r exists and cannot be checked: %s" % (path, state))
        try:
            os.unlink(path)  # stale, or the socket of our own master's dead supervisor
        except FileNotFoundError:
            pass
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


def _probe(path: str) -> str:
    """"live" (something accepts), "stale" (nobody listens), or why it cannot be told."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        return "stale"
    except OSError as exc:
        return str(exc)
    finally:
        probe.close()
    return "live"


class Supervisor:
    def __init__(self, listener: socket.socket, path: str, uid: int, gid: int,
                 master_pid: int, life_fd: int, cgroup_root: str | None = None,
                 cgroup_why: str = "", cgroup_required: bool = False,
                 rules: tuple[policy.Policy, dict[str, Any]] | None = None,
                 policy_reader: policy.PolicyReader | None = None) -> None:
        self.listener = listener
        self.path = path
        self.uid = uid
        self.gid = gid
        self.master_pid = master_pid
        self.life_fd = life_fd
        self.pid = os.getpid()                 # what a daemon checks its parent against
        self.cgroup_root = cgroup_root
        self.cgroup_why = cgroup_why
        self.cgroup_required = cgroup_required
        self.lifecycle = DaemonLifecycle(started_at=time.monotonic())
        self.daemon_pid = 0
        self.ready_fd = -1                     # the current daemon's readiness pipe, until it reports
        self.last_death = ""
        self.timers = Timers()
        self.restart_timer: Timer | None = None
        self.answering = False                 # the listener is ours to answer (no daemon to wait for)
        self.wakeup = SignalWakeup()
        self.sel: selectors.BaseSelector | None = None
        self.sock_ino = _inode(path)           # to remove only the socket we bound
        self.rules = rules if rules is not None else (policy.Policy(), {})
        self.policy_reader = policy_reader or policy.PolicyReader()  # frames on the life pipe
        self.policy_w = -1                     # the current daemon's policy pipe
        self.daemon_setid = False              # the current daemon kept the means to run scripts as others
        self.planned_restart = False           # the current daemon was stopped for a new policy

    # -- starting a daemon --------------------------------------------------------

    def start_daemon(self) -> int:
        """Fork the daemon; returns the read end of its readiness pipe. Raises OSError."""
        ready_r, ready_w = os.pipe()
        try:
            policy_r, policy_w = os.pipe()
        except OSError:
            os.close(ready_r)
            os.close(ready_w)
            raise
        try:
            pid = os.fork()
        except OSError:
            for fd in (ready_r, ready_w, policy_r, policy_w):
                os.close(fd)
            raise
        if pid == 0:  # the daemon
            code = 0
            try:
                os.close(ready_r)
                os.close(policy_w)
                code = run_daemon(self, ready_w, policy_r)
            except BaseException as exc:  # the child must never return into the supervisor
                log("critical", "cgid daemon crashed: %r", exc)
                code = 1
            finally:
                os._exit(code)
        os.close(ready_w)
        os.close(policy_r)
        os.set_blocking(policy_w, False)
        self._close_policy_pipe()
        self.policy_w = policy_w
        self.daemon_setid = self.rules[0].needs_setid
        self.daemon_pid = pid
        return ready_r

    def _close_policy_pipe(self) -> None:
        if self.policy_w >= 0:
            os.close(self.policy_w)
            self.policy_w = -1

    # -- the policy ---------------------------------------------------------------

    def _from_master(self) -> bool:
        """The life pipe is readable: new policies, or EOF (False) when the master is gone."""
        try:
            data = os.read(self.life_fd, 65536)
        except OSError:
            data = b""
        if not data:
            return False
        try:
            received = self.policy_reader.feed(data)
        except policy.PolicyError as exc:
            log("error", "unreadable policy from gunicorn's master (%s); keeping the current one", exc)
            self.policy_reader = policy.PolicyReader()
            return True
        for pol in received:
            self.new_policy(pol)
        return True

    def new_policy(self, pol: policy.Policy) -> None:
        """After SIGHUP: check the master's new policy and hand it to the daemon, or keep the old one."""
        try:
            rules = load_rules(pol, self.uid, self.gid)
        except ValueError as exc:
            log("error", "SIGHUP: the new CGI settings are refused, the previous ones hold: %s", exc)
            return
        self.rules = rules
        if pol.needs_setid and not self.daemon_setid and self.daemon_pid:
            # The daemon gave up the capabilities run-as needs when it
            # dropped privileges: a new one keeps them.
            log("info", "SIGHUP: a location now runs scripts as its own user; restarting the cgid daemon")
            self.planned_restart = True
            self._close_policy_pipe()
            os.kill(self.daemon_pid, signal.SIGTERM)
            return
        if not pol.needs_setid:
            self.daemon_setid = False  # the daemon gives them up for good on this policy
        if self.policy_w >= 0:
            try:
                os.write(self.policy_w, policy.encode(pol))
            except OSError as exc:
                log("error", "cannot hand the new policy to the cgid daemon: %s", exc)

    def wait_ready(self, ready_r: int) -> str | None:
        """The first daemon: None when it is up, else why it is not."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        sel = selectors.DefaultSelector()
        sel.register(ready_r, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if sel.select(0.1):
                    data = os.read(ready_r, 512)
                    if data.startswith(b"ok"):
                        self.lifecycle.on(DaemonEvent.READY, time.monotonic())
                        return None
                    pid, status = os.waitpid(self.daemon_pid, 0)
                    self.daemon_pid = 0
                    return data.decode("utf-8", "replace").strip() or "daemon exited with status %d" % status
            return "the daemon did not start within %.0f s" % READY_TIMEOUT_SECONDS
        finally:
            sel.close()
            os.close(ready_r)

    def _restart(self) -> None:
        self.restart_timer = None
        now = time.monotonic()
        if self.lifecycle.state is not DaemonState.BACKOFF:
            return
        self.lifecycle.on(DaemonEvent.START, now)
        try:
            ready = self.start_daemon()
        except OSError as exc:
            self._after_death("could not be forked: %s" % exc.strerror, unusable=False)
            return
        # Kept open until the daemon reports: closing it at once would
        # make the daemon's readiness write fail with EPIPE.
        self.ready_fd = ready
        assert self.sel is not None
        self.sel.register(ready, selectors.EVENT_READ, "ready")

    def _on_ready(self) -> None:
        try:
            data = os.read(self.ready_fd, 512)
        except OSError:
            data = b""
        self._close_ready()
        if data.startswith(b"ok"):
            self.lifecycle.on(DaemonEvent.READY, time.monotonic())
        # Otherwise it failed and says why in its own log line; its exit comes as SIGCHLD.

    def _close_ready(self) -> None:
        if self.ready_fd >= 0:
            if self.sel is not None:
                try:
                    self.sel.unregister(self.ready_fd)
                except (KeyError, ValueError):
                    pass
            os.close(self.ready_fd)
            self.ready_fd = -1

    # -- the loop ---------------------------------------------------------------

    def serve(self) -> int:
        self.wakeup.install()
        self.sel = sel = selectors.DefaultSelector()
        sel.register(self.wakeup.reader, selectors.EVENT_READ, "wake")
        sel.register(self.life_fd, selectors.EVENT_READ, "life")
        self._reap()  # a daemon may have died before the handlers existed
        while True:
            self._sync_listener()
            for key, _ in sel.select(self._timeout()):
                if key.data == "ready":
                    self._on_ready()
                elif key.data == "listen":
                    self._answer()
                elif key.data == "life":
                    if not self._from_master():
                        log("info", "gunicorn master %d is gone: stopping the CGI daemon and its scripts",
                            self.master_pid)
                        return self.stop(fast=True)
                else:
                    sigs = self.wakeup.received()
                    if signal.SIGCHLD in sigs:
                        self._reap()
                    if signal.SIGHUP in sigs:
                        self._retry()
                    if signal.SIGINT in sigs:
                        return self.stop(fast=True)
                    if signal.SIGTERM in sigs:
                        return self.stop(fast=False)
            self.timers.run_due(time.monotonic())
            if os.getppid() != self.master_pid:
                log("info", "gunicorn master %d is gone: stopping the CGI daemon", self.master_pid)
                return self.stop(fast=True)

    def _timeout(self) -> float:
        now = time.monotonic()
        timeout = MASTER_CHECK_SECONDS
        when = self.timers.next_when()
        if when is not None:
            timeout = min(timeout, when - now)
        restart_at = self.lifecycle.restart_at
        if self.answering and restart_at is not None:
            timeout = min(timeout, restart_at - BACKLOG_WAIT_SECONDS - now)  # stop answering then
        return max(0.0, timeout)

    def _no_daemon_for_long(self) -> bool:
        """No daemon to hand connections to within BACKLOG_WAIT_SECONDS."""
        lc = self.lifecycle
        if lc.state is DaemonState.FATAL:
            return True
        return (lc.state is DaemonState.BACKOFF and lc.restart_at is not None
                and lc.restart_at - time.monotonic() >= BACKLOG_WAIT_SECONDS)

    def _sync_listener(self) -> None:
        want = self._no_daemon_for_long()
        if want == self.answering or self.sel is None:
            return
        if want:
            self.listener.setblocking(False)  # shared with the daemons, which want it so too
            self.sel.register(self.listener, selectors.EVENT_READ, "listen")
        else:
            self.sel.unregister(self.listener)
        self.answering = want

    def _answer(self) -> None:
        """No daemon: refuse each waiting connection at once with a FAILED frame (503 for the client)."""
        if self.lifecycle.state is DaemonState.FATAL:
            why = ("the CGI daemon is not running (%s); send SIGHUP to gunicorn's master to retry"
                   % (self.last_death or "it gave up"))
        else:
            why = "the CGI daemon is restarting"
        frame = wire.encode_failed(wire.FAIL_SHUTDOWN, 0, why)
        for _ in range(64):
            try:
                sock, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log("error", "accept on ScriptSock failed: %s", exc)
                return
            try:
                sock.setblocking(False)
                sock.send(frame)
            except OSError:
                pass
            finally:
                sock.close()

    # -- deaths -----------------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid != self.daemon_pid:
                continue  # a script orphaned by a dead daemon (we are its subreaper)
            self.daemon_pid = 0
            self._close_ready()
            self._close_policy_pipe()
            # Its scripts are ours now (we are the subreaper) and nobody will
            # ever report their exit: their workers have lost the connection.
            self.timers.call_at(time.monotonic() + ORPHAN_TERM_DELAY_SECONDS, self._orphans_term, pid)
            unusable = os.WIFEXITED(status) and os.WEXITSTATUS(status) == DAEMON_STARTUP_ERROR
            if self.planned_restart and not unusable:
                self.planned_restart = False
                if self.lifecycle.on(DaemonEvent.REPLACED, time.monotonic()) is DaemonState.BACKOFF:
                    assert self.lifecycle.restart_at is not None
                    self._schedule_restart(self.lifecycle.restart_at)
                continue
            self._after_death(_describe_status(status), unusable)

    def _after_death(self, how: str, unusable: bool) -> None:
        lc = self.lifecycle
        if lc.state is DaemonState.STOPPING:
            return
        now = time.monotonic()
        self.last_death = "its last start ended: %s" % how
        state = lc.on(DaemonEvent.UNUSABLE if unusable else DaemonEvent.DIED, now)
        if state is DaemonState.FATAL:
            if unusable:
                log("critical", "cgid daemon failed to initialize; not restarting it: CGI requests get 503"
                    " until gunicorn's master gets SIGHUP")
            else:
                log("critical", "cgid daemon FATAL: it died at start %d times in a row (the last time: %s); not"
                    " restarting it: CGI requests get 503 until gunicorn's master gets SIGHUP", lc.quick_deaths, how)
            return
        assert lc.restart_at is not None
        delay = max(0.0, lc.restart_at - now)
        log("error", "cgid daemon process died (%s), restarting%s", how, " in %.2f s" % delay if delay else "")
        self._schedule_restart(lc.restart_at)

    def _schedule_restart(self, when: float) -> None:
        self.timers.cancel(self.restart_timer)
        self.restart_timer = self.timers.call_at(when, self._restart)

    def _retry(self) -> None:
        """SIGHUP: a daemon that gave up, or is backing off, is started again now."""
        lc = self.lifecycle
        before = lc.state
        if lc.on(DaemonEvent.RETRY, time.monotonic()) is DaemonState.BACKOFF and lc.restart_at is not None:
            log("info", "SIGHUP: starting the cgid daemon again (it was %s)", before.value)
            self._schedule_restart(lc.restart_at)

    def _orphans(self) -> list[int]:
        return [pid for pid in containment.children(os.getpid()) if pid != self.daemon_pid]

    def _orphans_term(self, dead_pid: int) -> None:
        # Everything the dead daemon started now descends from one of our
        # children (we are the subreaper), whatever session it is in.
        signalled = containment.kill_trees(self._orphans(), signal.SIGTERM)
        if signalled:
            log("warning", "killing %d process(es) left by the dead cgid daemon", len(signalled))
        self.timers.call_at(time.monotonic() + ORPHAN_KILL_GRACE_SECONDS, self._orphans_kill, dead_pid)

    def _orphans_kill(self, dead_pid: int) -> None:
        killed = containment.kill_trees(self._orphans(), signal.SIGKILL)
        cage = containment.daemon_cgroup(self.cgroup_root, dead_pid) if self.cgroup_root else None
        if cage and containment.cg_populated(cage):
            containment.cg_kill(cage)
            killed.append(0)
        if killed:
            log("warning", "scripts of the dead cgid daemon didn't exit, sent SIGKILL")
        if cage:
            self._remove_cgroup(cage, CGROUP_REMOVE_TRIES)

    def _remove_cgroup(self, cage: str, tries: int) -> None:
        if not containment.cg_remove(cage) and tries > 0:
            containment.cg_kill(cage)
            self.timers.call_at(time.monotonic() + 0.05, self._remove_cgroup, cage, tries - 1)

    # -- stopping ---------------------------------------------------------------

    def stop(self, fast: bool) -> int:
        self.lifecycle.on(DaemonEvent.STOP, time.monotonic())
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
                    pid = self.daemon_pid
                if pid:
                    self.daemon_pid = 0
                    break
                time.sleep(0.01)
            else:
                os.kill(self.daemon_pid, signal.SIGKILL)
        # Whatever the daemon left behind (scripts it had no time to kill,
        # leftovers re-parented to us) goes with it.
        containment.kill_trees(self._orphans() + ([self.daemon_pid] if self.daemon_pid else []))
        if self.cgroup_root and not containment.cg_clear(self.cgroup_root):
            log("error", "could not remove the cgroup %s: processes in it did not exit", self.cgroup_root)
        self._remove_socket()
        return 0

    def _remove_socket(self) -> None:
        remove_socket(self.path)


def remove_socket(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        log("error", "cannot remove script_sock %r: %s", path, exc)


def load_rules(pol: policy.Policy, uid: int, gid: int) -> tuple[policy.Policy, dict[str, Any]]:
    """The policy checked: scripts never root unless allowed, run-as accounts that exist.

    ``uid``/``gid``: gunicorn's user and group, which a root master's daemon
    drops to; any other master runs scripts as itself. Raises ValueError.
    """
    euid = os.geteuid()
    ids = (uid, gid) if euid == 0 else (euid, os.getegid())
    why = policy.root_refusal(euid, ids[0], ids[1], pol.allow_root)
    if why:
        raise ValueError(why)
    return pol, resolve_accounts(pol)


def _first_policy(fd: int, reader: policy.PolicyReader, timeout: float) -> policy.Policy:
    """Read the policy the master writes on the life pipe right after starting us; PolicyError if none."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise policy.PolicyError("no policy from gunicorn's master within %.0f s" % timeout)
        data = os.read(fd, 65536)
        if not data:
            raise policy.PolicyError("gunicorn's master closed the life pipe before sending the policy")
        received = reader.feed(data)
        if received:
            return received[-1]


def run_daemon(sup: Supervisor, ready_w: int, policy_r: int = -1) -> int:
    """In the forked daemon: set up containment, drop privileges, then serve until told to stop.

    The death signal is set after the privilege drop (changing credentials
    clears it), and the parent is then checked against the supervisor's pid
    recorded before the fork, so a supervisor that died meanwhile is seen.
    A policy with run-as locations keeps the capabilities to start scripts
    as their users (``spawn.drop_privileges``, ``suexec``).
    """
    sup.wakeup.close()
    os.close(sup.life_fd)
    if sup.sel is not None:
        sup.sel.close()
    if sup.ready_fd >= 0:
        os.close(sup.ready_fd)
    try:
        cage = containment.for_daemon(sup.cgroup_root, sup.cgroup_why, sup.uid, sup.gid,
                                      required=sup.cgroup_required)
    except containment.ContainmentError as exc:
        msg = "cgid daemon cannot set up its cgroup: %s" % exc
        log("critical", "%s", msg)
        _report(ready_w, msg.encode())
        return DAEMON_STARTUP_ERROR
    try:
        if sup.rules[0].needs_setid:
            spawn.drop_privileges(sup.uid, sup.gid, keep_setid=True)  # type: ignore[call-arg]
        else:
            spawn.drop_privileges(sup.uid, sup.gid)
    except OSError as exc:
        msg = "cgid daemon cannot drop privileges to %s: %s" % (spawn.describe_ids(sup.uid, sup.gid), exc)
        log("critical", "%s", msg)
        _report(ready_w, msg.encode())
        return DAEMON_STARTUP_ERROR
    spawn.die_with_parent(signal.SIGINT)
    if os.getppid() != sup.pid:
        return 0  # the supervisor died before the death signal was set
    spawn.become_subreaper()
    set_title("gunicorn-cgid: daemon [master %d]" % sup.master_pid)
    _report(ready_w, b"ok")
    daemon = Daemon(sup.listener, sup.master_pid, supervisor_pid=sup.pid, cage=cage,
                    on_orphaned=lambda: _remove_own_socket(sup), rules=sup.rules, policy_fd=policy_r)
    log("info", "containment: %s", cage.name)
    log("info", "spawn: %s", spawn.path_name())
    log("info", "cgid daemon %d serving %s as %s", os.getpid(), sup.path,
        spawn.describe_ids(os.geteuid(), os.getegid()))
    daemon.serve()
    return 0


def _remove_own_socket(sup: Supervisor) -> None:
    """The supervisor was killed: nobody else will remove the socket it bound.

    Only if the path still holds that socket: a new supervisor may already
    have bound its own there.
    """
    if sup.sock_ino and _inode(sup.path) == sup.sock_ino:
        remove_socket(sup.path)


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


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return "killed by signal %d" % os.WTERMSIG(status)
    return "exit status %d" % os.WEXITSTATUS(status)


def _close_inherited(keep: set[int]) -> None:
    """Close what the master let us inherit by mistake (its listeners are inheritable)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2 or fd in keep:
            continue
        try:
            if os.get_inheritable(fd):
                os.close(fd)
        except OSError:
            pass


def main(argv: list[str]) -> int:
    """Entry point: ``python -m gunicorn_cgid.daemon PATH UID GID MASTER_PID LIFE_FD [LOGFILE] [LEVEL] [replace]``.

    Prints ``READY <daemon pid>`` (or ``ERROR: why``) on stdout once, then
    closes it. ``replace``: started again by the same master after its
    supervisor died; the socket of that supervisor's daemon is taken over.
    """
    path, uid, gid, master_pid, life_fd = argv[0], int(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    logfile = argv[5] if len(argv) > 5 else "-"
    replace = len(argv) > 7 and argv[7] == "replace"
    _close_inherited({life_fd})
    os.set_inheritable(life_fd, False)
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
    set_title("gunicorn-cgid: supervisor [master %d]" % master_pid)
    reader = policy.PolicyReader()
    try:
        rules = load_rules(_first_policy(life_fd, reader, READY_TIMEOUT_SECONDS), uid, gid)
    except ValueError as exc:  # PolicyError included
        out.write("ERROR: %s\n" % exc)
        out.close()
        return 1
    if rules[0].allow_root and 0 in ((uid, gid) if os.geteuid() == 0 else (os.geteuid(), os.getegid())):
        log("warning", "cgi_allow_root is set: CGI scripts run as %s, with root's power over this system",
            spawn.describe_ids(*((uid, gid) if os.geteuid() == 0 else (os.geteuid(), os.getegid()))))
    # No death signal here: the master may start us from a thread, and the
    # signal would come when that thread ends. EOF on the life pipe (and
    # the getppid check) tell us the master is gone.
    spawn.become_subreaper()
    cgroup_root = None
    try:
        mode = containment.mode_from_env()
        # The cgroup first: a cgroup left by a killed supervisor of this
        # master is emptied, its daemon with it, which frees the socket path.
        cgroup_root, cgroup_why = containment.prepare_root(master_pid, mode)
        listener = prepare_socket(path, uid, gid, replace_live=replace)
    except (SetupError, containment.ContainmentError) as exc:
        if cgroup_root:
            containment.cg_clear(cgroup_root)
        out.write("ERROR: %s\n" % exc)
        out.close()
        return 1
    sup = Supervisor(listener, path, uid, gid, master_pid, life_fd, cgroup_root, cgroup_why,
                     cgroup_required=mode == "cgroup", rules=rules, policy_reader=reader)
    try:
        error = sup.wait_ready(sup.start_daemon())
    except OSError as exc:
        error = "cannot fork the daemon: %s" % exc
    if error:
        sup._remove_socket()
        if cgroup_root:
            containment.cg_clear(cgroup_root)
        out.write("ERROR: %s\n" % error)
        out.close()
        return 1
    out.write("READY %d\n" % sup.daemon_pid)
    out.close()
    return sup.serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
