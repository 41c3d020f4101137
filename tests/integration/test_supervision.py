"""Supervision of the daemon side, against real gunicorn (gthread and gevent).

The master keeps a supervisor alive (``kill -9`` of it under load), the
supervisor gives up on a daemon that keeps dying at start (FATAL: 503 at
once) and starts again on SIGHUP, and SIGHUP never takes the master down,
whatever state the daemon side is in. Every wait polls with a deadline.

A daemon that "crashes at start" is made here the way it happens in the
field to a process that is killed as soon as it runs (an OOM killer, a
watchdog): each daemon is sent SIGKILL the moment it appears.
"""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from gunicorn_cgid.daemon import containment, lifecycle

from .conftest import Server, children_of, cmdline, descendants, pid_alive, wait_until

WORKERS = ["gthread", "gevent"]
OK_SCRIPT = "/cgi-bin/life-ok.sh"


# -- helpers -------------------------------------------------------------------

def supervisor_of(srv: Server) -> int:
    """The master's supervisor, 0 when it has none."""
    for pid in children_of(srv.pid):
        if b"gunicorn_cgid.daemon" in cmdline(pid) and pid_alive(pid):
            return pid
    return 0


def daemons_of(sup: int) -> list[int]:
    """Live daemons of the supervisor: its children in its own process group with its command line.

    A script of a dead daemon is re-parented to the supervisor too, but it
    runs in a session of its own.
    """
    out = []
    for pid in children_of(sup) if sup else []:
        try:
            same_group = os.getpgid(pid) == os.getpgid(sup)
        except OSError:
            continue
        if same_group and b"gunicorn_cgid.daemon" in cmdline(pid) and pid_alive(pid):
            out.append(pid)
    return out


def serving_daemon(srv: Server) -> int:
    """The daemon that logged it serves, 0 when there is none."""
    log = error_log(srv)
    for pid in daemons_of(supervisor_of(srv)):
        if "cgid daemon %d serving" % pid in log:
            return pid
    return 0


def error_log(srv: Server) -> str:
    return srv.errorlog.read_text(errors="replace") if srv.errorlog.exists() else ""


def logged(srv: Server, text: str) -> bool:
    return text in error_log(srv)


def status_of(srv: Server, path: str = OK_SCRIPT) -> int:
    try:
        return srv.get(path, timeout=10)[0]
    except (OSError, http.client.HTTPException):
        return 0


def workers_of(srv: Server) -> list[int]:
    sup = supervisor_of(srv)
    return [p for p in children_of(srv.pid) if p != sup and pid_alive(p)]


def hup(srv: Server) -> None:
    """SIGHUP the master, and wait until its reload is over.

    gunicorn's reload waits (up to graceful_timeout) for the old workers to
    exit, and handles no other signal meanwhile; a worker still booting when
    the reload begins may take all of that time.
    """
    count = int(srv.settings.get("workers", 2))  # type: ignore[call-overload]
    wait_until(lambda: len(workers_of(srv)) == count, 15, what="%d workers" % count)
    old = workers_of(srv)
    os.kill(srv.pid, signal.SIGHUP)
    wait_until(lambda: not [p for p in old if pid_alive(p)] and len(workers_of(srv)) == count, 15,
               what="the old workers %s to exit" % old)


def serves_again(srv: Server, timeout: float = 15) -> None:
    wait_until(lambda: status_of(srv) == 200, timeout, interval=0.02, what="CGI requests to succeed again")


def kill_daemons_until(srv: Server, done: Callable[[], bool], timeout: float = 20) -> int:
    """SIGKILL every daemon of the supervisor as soon as it appears, until ``done()``; returns how many."""
    sup = supervisor_of(srv)
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    next_check = 0.0
    while True:
        for pid in daemons_of(sup):
            os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        now = time.monotonic()
        if now >= next_check:
            if done():
                return len(killed)
            next_check = now + 0.02
        assert now < deadline, "timed out killing daemons (%d killed):\n%s" % (len(killed), error_log(srv)[-3000:])
        time.sleep(0.002)


def wait_daemon_older_than(srv: Server, seconds: float) -> None:
    """Until the serving daemon has run ``seconds``: its death then does not count as one at start."""
    def old_enough() -> bool:
        info = containment.proc_info(serving_daemon(srv))
        return info is not None and containment.boottime() - info.born_by > seconds
    wait_until(old_enough, 10, what="the daemon to have served %.1f s" % seconds)


def cgroup_root(master_pid: int) -> str | None:
    """Where the supervisor of ``master_pid`` puts its cgroups (None without cgroup v2)."""
    where, _why = containment.find_cgroup2()
    return os.path.join(where, "gunicorn-cgid.%d" % master_pid) if where else None


@dataclass
class Record:
    start: float
    end: float
    outcome: object  # 200, another status, or the exception


class Load:
    """``n`` threads issuing GETs back to back, each on a new connection; records every outcome."""

    def __init__(self, srv: Server, path: str = OK_SCRIPT, n: int = 4) -> None:
        self.srv = srv
        self.path = path
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.records: list[Record] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            start = time.monotonic()
            try:
                status, _, body = self.srv.get(self.path, timeout=15)
                outcome: object = status if status != 200 or body == b"ok\n" else "bad body %r" % body[:50]
            except (OSError, http.client.HTTPException) as exc:  # failures are data here
                outcome = exc
            with self.lock:
                self.records.append(Record(start, time.monotonic(), outcome))

    def served_after(self, when: float) -> list[Record]:
        with self.lock:
            return [r for r in self.records if r.start > when and r.outcome == 200]

    def count(self) -> int:
        with self.lock:
            return len(self.records)

    def stop(self) -> list[Record]:
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)
        return list(self.records)


class Background:
    """One request in a thread; ``result`` is (status, headers, body) or the exception."""

    def __init__(self, srv: Server, path: str) -> None:
        self.result: object = None
        self.thread = threading.Thread(target=self._run, args=(srv, path), daemon=True)
        self.thread.start()

    def _run(self, srv: Server, path: str) -> None:
        try:
            self.result = srv.get(path, timeout=30)
        except (OSError, http.client.HTTPException) as exc:
            self.result = exc

    def join(self) -> object:
        self.thread.join(30)
        assert not self.thread.is_alive(), "request still running"
        return self.result


def script_tree(daemon: int, name: str) -> list[int]:
    roots = [p for p in descendants(daemon) if name.encode() in cmdline(p) and pid_alive(p)]
    return sorted({q for r in roots for q in [r] + descendants(r) if pid_alive(q)})


# -- the lifecycle, without processes ------------------------------------------

def test_lifecycle_backs_off_then_gives_up_and_retries():
    lc = lifecycle.DaemonLifecycle(started_at=0.0)
    S, E = lifecycle.DaemonState, lifecycle.DaemonEvent
    assert lc.on(E.READY, 0.1) is S.RUNNING
    assert lc.on(E.DIED, 5.0) is S.BACKOFF and lc.restart_at == 5.0  # first death of a daemon that served
    delays = []
    now = 5.0
    while lc.state is S.BACKOFF:
        assert lc.restart_at is not None
        delays.append(round(lc.restart_at - now, 3))
        now = lc.restart_at
        assert lc.on(E.START, now) is S.STARTING
        lc.on(E.DIED, now + 0.01)  # dies at start
        now += 0.01
    assert lc.state is S.FATAL
    assert delays == [0.0, 0.1, 0.2, 0.4, 0.8]
    assert lc.on(E.START, now) is S.FATAL  # nothing starts by itself
    assert lc.on(E.RETRY, now + 1) is S.BACKOFF and lc.restart_at == now + 1
    assert lc.on(E.STOP, now + 2) is S.STOPPING
    assert lc.on(E.RETRY, now + 3) is S.STOPPING


def test_a_daemon_replaced_for_a_new_policy_is_no_death():
    lc = lifecycle.DaemonLifecycle(started_at=0.0)
    S, E = lifecycle.DaemonState, lifecycle.DaemonEvent
    lc.on(E.READY, 0.1)
    for now in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7):  # more than MAX_QUICK_DEATHS, each at once
        assert lc.on(E.REPLACED, now) is S.BACKOFF and lc.restart_at == now
        assert lc.on(E.START, now) is S.STARTING
    assert (lc.deaths, lc.quick_deaths) == (0, 0)
    assert lc.on(E.REPLACED, 1.0) is S.BACKOFF  # from STARTING too
    assert lc.on(E.REPLACED, 1.1) is S.BACKOFF and lc.restart_at == 1.0  # nothing to replace meanwhile


def test_backoff_is_capped():
    assert lifecycle.backoff_delay(1) == 0.0
    assert lifecycle.backoff_delay(2) == lifecycle.FIRST_BACKOFF_SECONDS
    assert lifecycle.backoff_delay(100) == lifecycle.MAX_BACKOFF_SECONDS


# -- kill -9 of the supervisor -------------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_supervisor_kill9_under_load(serve, worker, record_property):
    srv = serve(worker)
    sup, daemon = supervisor_of(srv), serving_daemon(srv)
    assert sup and daemon
    load = Load(srv)
    wait_until(lambda: load.count() >= 30, 20, what="some load")
    sleeper = Background(srv, "/cgi-bin/sleep.sh?30")
    tree = wait_until(lambda: (lambda t: t if len(t) >= 3 else None)(script_tree(daemon, "sleep.sh")), 10,
                      what="sleep.sh and its children")
    assert isinstance(tree, list)

    os.kill(sup, signal.SIGKILL)
    t_kill = time.monotonic()
    wait_until(lambda: load.served_after(t_kill), 1.0, interval=0.005,
               what="a request started after the kill to be served")
    t_served = min(r.end for r in load.served_after(t_kill))
    new_sup = supervisor_of(srv)
    assert new_sup not in (0, sup)
    # The orphaned daemon leaves at once, with its scripts.
    wait_until(lambda: not [p for p in [daemon] + tree if pid_alive(p)], 1.0 - (time.monotonic() - t_kill),
               interval=0.005, what="the orphaned daemon and its scripts to exit")
    t_gone = time.monotonic()
    wait_until(lambda: len(load.served_after(t_kill + 1.0)) >= 100, 30, what="load after the first second")
    records = load.stop()

    failed_after = [r.outcome for r in records if r.start > t_kill + 1.0 and r.outcome != 200]
    failed_first_second = [r.outcome for r in records if t_kill - 1.0 < r.start <= t_kill + 1.0 and r.outcome != 200]
    record_property("served_again_ms", round((t_served - t_kill) * 1000, 1))
    record_property("orphaned_daemon_gone_ms", round((t_gone - t_kill) * 1000, 1))
    print("\n%s: served again %.0f ms after kill -9 of the supervisor; old daemon and scripts gone after %.0f ms;"
          " %d requests, %d failed around the kill %r"
          % (worker, (t_served - t_kill) * 1000, (t_gone - t_kill) * 1000, len(records),
             len(failed_first_second), failed_first_second[:4]))
    assert not failed_after, failed_after[:5]
    result = sleeper.join()
    assert isinstance(result, tuple) and result[0] in (502, 503), result
    assert logged(srv, "CGI supervisor is gone; starting a new one")
    assert status_of(srv) == 200
    assert supervisor_of(srv) == new_sup  # replaced once

    everything = [srv.pid] + descendants(srv.pid)
    assert srv.stop() == 0
    wait_until(lambda: not [p for p in everything if pid_alive(p)], 5, what="every process of the server")
    root = cgroup_root(srv.pid)
    assert root is None or not os.path.exists(root), os.listdir(root)


# -- a daemon that dies at start ------------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_daemon_crash_loop_is_fatal_then_sighup_recovers(serve, worker):
    srv = serve(worker)
    sup = supervisor_of(srv)
    kills = kill_daemons_until(srv, lambda: logged(srv, "cgid daemon FATAL"))
    # The first daemon counts as dying at start only if it had served for less than a second.
    assert kills in (lifecycle.MAX_QUICK_DEATHS, lifecycle.MAX_QUICK_DEATHS + 1)
    wait_until(lambda: not daemons_of(sup), 2, what="no daemon left")
    log = error_log(srv)
    assert log.count("cgid daemon FATAL") == 1
    assert "restarting in 0.40 s" in log and "restarting in 1.60 s" not in log  # backed off, then gave up

    # FATAL: the supervisor answers every request at once; nothing restarts by itself.
    for _ in range(3):
        start = time.monotonic()
        assert status_of(srv) == 503
        assert time.monotonic() - start < 1.0
    assert not daemons_of(sup) and supervisor_of(srv) == sup and pid_alive(srv.pid)

    hup(srv)
    serves_again(srv)
    assert logged(srv, "SIGHUP: starting the cgid daemon again (it was fatal)")
    assert supervisor_of(srv) == sup  # the same supervisor tried again
    assert "Unhandled exception" not in error_log(srv)


# -- SIGHUP in every state -----------------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_sighup_in_every_state_keeps_the_master(serve, worker):
    srv = serve(worker)
    sup = supervisor_of(srv)
    run_dir = srv.root / "run"

    # RUNNING
    daemon = serving_daemon(srv)
    hup(srv)
    assert status_of(srv) == 200 and serving_daemon(srv) == daemon

    # BACKOFF: SIGHUP while a restart waits 0.8 s starts it at once.
    wait_daemon_older_than(srv, lifecycle.MIN_UPTIME_SECONDS + 0.1)
    kill_daemons_until(srv, lambda: logged(srv, "restarting in 0.80 s"))
    os.kill(srv.pid, signal.SIGHUP)
    wait_until(lambda: logged(srv, "SIGHUP: starting the cgid daemon again (it was backoff)"), 10,
               what="the retry from BACKOFF")
    serves_again(srv)

    # FATAL
    kill_daemons_until(srv, lambda: logged(srv, "cgid daemon FATAL"))
    assert status_of(srv) == 503
    hup(srv)
    serves_again(srv)
    assert supervisor_of(srv) == sup

    # Supervisor dead, and a new one cannot start (its socket directory became unsafe).
    os.chmod(run_dir, 0o777)
    try:
        os.kill(sup, signal.SIGKILL)
        wait_until(lambda: logged(srv, "CGI supervisor could not be started again"), 10,
                   what="the watcher's failed restart")
        hup(srv)
        wait_until(lambda: logged(srv, "could not start a new one on SIGHUP"), 15, what="the failed reload")
        assert pid_alive(srv.pid)
    finally:
        os.chmod(run_dir, 0o755)
    hup(srv)  # now it can
    serves_again(srv)
    assert supervisor_of(srv) not in (0, sup)
    assert pid_alive(srv.pid)
    log = error_log(srv)
    assert "Unhandled exception" not in log and "Traceback" not in log, log[-3000:]
