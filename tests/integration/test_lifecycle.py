"""Process lifecycle and fault tolerance, against real gunicorn (gthread and gevent).

Every wait polls with a deadline. Scripts are found as descendants of the CGI
daemon; "gone" means no such pid is alive (zombies count as gone, and are
checked for separately).
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable

import pytest

from .conftest import Server, children_of, cmdline, descendants, kept_connections, pid_alive, wait_until

WORKERS = ["gthread", "gevent"]
EXIT_LOG_FORMAT = '%(r)s %(s)s exit=%({cgi.exit_status}e)s'


# -- helpers -----------------------------------------------------------------

def state(pid: int) -> str:
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def fd_count(pid: int) -> int:
    return len(os.listdir("/proc/%d/fd" % pid))


def scripts_of(srv: Server, name: str | None = None) -> list[int]:
    """Live processes under the daemon (scripts and their children), optionally one script's tree."""
    daemon = safe_daemon_pid(srv)
    if not daemon:
        return []
    pids = [p for p in descendants(daemon) if pid_alive(p)]
    if name is None:
        return pids
    roots = [p for p in pids if name.encode() in cmdline(p)]
    return sorted({q for r in roots for q in [r] + descendants(r) if pid_alive(q)})


def wait_for_tree(srv: Server, name: str, count: int, timeout: float = 10) -> list[int]:
    """Wait until ``name`` runs with at least ``count`` processes in its tree (script + children)."""
    return wait_until(lambda: (lambda pids: pids if len(pids) >= count else None)(scripts_of(srv, name)),
                      timeout, what="%d processes of %s" % (count, name))  # type: ignore[return-value]


def wait_gone(pids: list[int], timeout: float, what: str) -> float:
    """Seconds until every pid is gone; fails after ``timeout``."""
    start = time.monotonic()
    wait_until(lambda: not [p for p in pids if pid_alive(p)], timeout, interval=0.01,
               what="%s %s to be gone (still: %s)" % (what, pids, [p for p in pids if pid_alive(p)]))
    return time.monotonic() - start


def safe_daemon_pid(srv: Server) -> int:
    """The daemon: the supervisor's child in its own process group.

    Not ``srv.daemon_pid()``, which takes any child with the daemon's command
    line: right after a daemon dies, a spawn it had not finished (forked, not
    yet exec'd) is re-parented to the supervisor too.
    """
    try:
        sup = srv.supervisor_pid()
        log = srv.errorlog.read_text(errors="replace") if srv.errorlog.exists() else ""
        for pid in children_of(sup):
            # A spawn caught between its fork and its setsid is in the
            # supervisor's group too; only a real daemon says it is serving.
            if (b"gunicorn_cgid.daemon" in cmdline(pid) and os.getpgid(pid) == os.getpgid(sup)
                    and pid_alive(pid) and "cgid daemon %d serving" % pid in log):
                return pid
    except (AssertionError, OSError):
        pass
    return 0


def zombies(pids: list[int]) -> list[int]:
    return [p for p in pids if state(p) == "Z"]


class Background:
    """One request in a thread; ``result`` is (status, headers, body) or the exception."""

    def __init__(self, srv: Server, path: str, timeout: float = 30) -> None:
        self.result: object = None
        self.started = time.monotonic()
        self.ended = 0.0
        self.thread = threading.Thread(target=self._run, args=(srv, path, timeout), daemon=True)
        self.thread.start()

    def _run(self, srv: Server, path: str, timeout: float) -> None:
        try:
            self.result = srv.get(path, timeout=timeout)
        except BaseException as exc:  # reported by the test
            self.result = exc
        self.ended = time.monotonic()

    def join(self, timeout: float = 30) -> object:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "request still running"
        return self.result


class Load:
    """``n`` threads issuing GETs back to back, each on a new connection; records every outcome."""

    def __init__(self, srv: Server, path: str, n: int = 4) -> None:
        self.srv = srv
        self.path = path
        self.stop_flag = threading.Event()
        self.lock = threading.Lock()
        self.records: list[tuple[float, float, object]] = []  # (start, end, status or exception)
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while not self.stop_flag.is_set():
            start = time.monotonic()
            try:
                status, _, body = self.srv.get(self.path, timeout=15)
                outcome: object = status if status != 200 or body == b"ok\n" else "bad body %r" % body[:50]
            except BaseException as exc:  # http.client failures are data here
                outcome = exc
            with self.lock:
                self.records.append((start, time.monotonic(), outcome))

    def count(self, pred: Callable[[tuple[float, float, object]], bool] = lambda r: True) -> int:
        with self.lock:
            return sum(1 for r in self.records if pred(r))

    def stop(self) -> list[tuple[float, float, object]]:
        self.stop_flag.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)
        return list(self.records)


def access_lines(srv: Server, needle: str) -> list[str]:
    if not srv.accesslog.exists():
        return []
    return [ln for ln in srv.accesslog.read_text().splitlines() if needle in ln]


# -- daemon death --------------------------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_daemon_kill9_under_load(serve, worker, record_property):
    srv = serve(worker)
    old = safe_daemon_pid(srv)
    up = time.monotonic()
    load = Load(srv, "/cgi-bin/life-ok.sh")
    # Past the supervisor's 1 s minimum uptime, so the restart is immediate (no crash-loop backoff).
    wait_until(lambda: load.count() >= 50 and time.monotonic() - up > 1.2, 20, what="some load")
    sleeper = Background(srv, "/cgi-bin/sleep.sh?30")
    orphans = wait_for_tree(srv, "sleep.sh", 3)

    os.kill(old, signal.SIGKILL)
    t_kill = time.monotonic()
    new = wait_until(lambda: (lambda p: p if p and p != old else 0)(safe_daemon_pid(srv)), 1.0,
                     interval=0.005, what="a new daemon pid")
    t_new = time.monotonic()
    # A request started after the kill is served by the new daemon within 1 s.
    wait_until(lambda: load.count(lambda r: r[0] > t_kill and r[2] == 200), 1.0 - (t_new - t_kill),
               interval=0.005, what="a request served by the new daemon")
    t_served = min(r[1] for r in load.records if r[0] > t_kill and r[2] == 200)
    # The scripts of the dead daemon have nobody to report to: they go too.
    orphan_gone = wait_gone(orphans, 1.5, "scripts orphaned by the dead daemon")
    wait_until(lambda: load.count(lambda r: r[0] > t_served) >= 100, 20, what="load after the restart")
    records = load.stop()
    sleeper_result = sleeper.join()

    before = [r for r in records if r[0] <= t_kill]
    after = [r for r in records if r[0] > t_kill]
    failed_before = [r[2] for r in before if r[2] != 200]
    failed_after = [r[2] for r in after if r[2] != 200]
    record_property("requests", len(records))
    record_property("failed_in_flight", len(failed_before))
    record_property("daemon_back_ms", round((t_new - t_kill) * 1000, 1))
    record_property("first_served_ms", round((t_served - t_kill) * 1000, 1))
    record_property("orphans_gone_ms", round(orphan_gone * 1000, 1))
    print("\n%s: %d requests, %d failed in flight %r, new daemon after %.0f ms, served after %.0f ms,"
          " orphans gone after %.0f ms" % (worker, len(records), len(failed_before), failed_before,
                                          (t_new - t_kill) * 1000, (t_served - t_kill) * 1000, orphan_gone * 1000))
    assert not failed_after, failed_after[:5]
    # In flight at the kill: at most one per load thread, each a clean gateway error,
    # or a response cut short (its script had written, but its exit was never reported).
    assert len(failed_before) <= 4
    assert all(f in (502, 503) or isinstance(f, http.client.IncompleteRead) for f in failed_before), failed_before
    assert isinstance(sleeper_result, tuple) and sleeper_result[0] in (502, 503), sleeper_result
    assert safe_daemon_pid(srv) == new  # restarted once
    assert "cgid daemon process died (killed by signal 9), restarting" in srv.log()
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200


@pytest.mark.parametrize("worker", WORKERS)
def test_master_kill9_takes_everything_down(serve, worker):
    srv = serve(worker, cgi_max_scripts=1, cgi_queue_timeout=30)
    sleeper = Background(srv, "/cgi-bin/sleep.sh?30")
    tree = wait_for_tree(srv, "sleep.sh", 3)  # sh and two sleeps, one of them a grandchild
    supervisor, daemon = srv.supervisor_pid(), srv.daemon_pid()
    fds = fd_count(daemon)
    queued = Background(srv, "/cgi-bin/sleep.sh?30")  # waits for the only slot
    wait_until(lambda: fd_count(daemon) > fds, 5, what="the second request to be queued in the daemon")
    sock = srv.root / "run" / ("cgisock.%d" % srv.pid)
    assert sock.exists()
    # Taken before the kill: afterwards nobody is the master's child any more.
    workers = wait_until(lambda: (lambda w: w if len(w) == 2 else None)(srv.worker_pids()), 10,
                         what="both workers to be up")
    assert len(workers) == 2 and len(tree) >= 3, (workers, tree)
    doomed = [supervisor, daemon] + tree
    assert all(pid_alive(p) for p in doomed + workers), [p for p in doomed + workers if not pid_alive(p)]

    os.kill(srv.pid, signal.SIGKILL)
    # The master is our child: reap it, so that its pid is really gone.
    assert srv.proc is not None and srv.proc.wait(5) == -signal.SIGKILL
    elapsed = wait_gone(doomed, 1.0, "supervisor, daemon and scripts")
    print("\n%s: supervisor, daemon and scripts gone %.0f ms after the master" % (worker, elapsed * 1000))
    wait_until(lambda: not sock.exists(), 1.0, what="the socket to be removed")
    # The worker either saw the daemon go (502) or died with the connection.
    for req in (sleeper, queued):
        result = req.join()
        assert isinstance(result, BaseException) or result[0] in (502, 503), result  # type: ignore[index]
    assert "cgid daemon crashed" not in srv.log()
    wait_gone(workers, 5, "workers")


def test_supervisor_kill9_then_sighup_restarts_it(serve):
    srv = serve("gthread")
    sleeper = Background(srv, "/cgi-bin/sleep.sh?30")
    tree = wait_for_tree(srv, "sleep.sh", 3)
    supervisor, daemon = srv.supervisor_pid(), srv.daemon_pid()
    sock = srv.root / "run" / ("cgisock.%d" % srv.pid)
    os.kill(supervisor, signal.SIGKILL)
    wait_gone([daemon] + tree, 1.0, "the daemon and scripts of the dead supervisor")
    wait_until(lambda: not sock.exists(), 1.0, what="the dead supervisor's socket to be removed")
    result = sleeper.join()
    assert isinstance(result, tuple) and result[0] == 502, result
    os.kill(srv.pid, signal.SIGHUP)  # on_reload starts a new supervisor
    wait_until(lambda: sock.exists(), 15, what="a new socket")
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
    assert srv.supervisor_pid() != supervisor
    assert "CGI supervisor is gone; starting a new one" in srv.log()


# -- requests that end early -------------------------------------------------

def _disconnect_silent(srv: Server) -> list[int]:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET /cgi-bin/sleep.sh?30 HTTP/1.1\r\nHost: x\r\n\r\n")
    tree = wait_for_tree(srv, "sleep.sh", 3)
    # A reset: a plain close (FIN) of a client whose script is silent is a
    # half-close, answered when the script answers (test_bad_requests).
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    return tree


def _disconnect_streaming(srv: Server) -> list[int]:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET /cgi-bin/life-drip.sh HTTP/1.1\r\nHost: x\r\n\r\n")
    data = b""
    while b"tick 3" not in data:
        chunk = s.recv(4096)
        assert chunk, data
        data += chunk
    tree = wait_for_tree(srv, "life-drip.sh", 3)
    s.close()
    return tree


@pytest.mark.parametrize("worker", WORKERS)
def test_client_disconnect_kills_script_tree(serve, worker):
    srv = serve(worker)
    for what, disconnect in (("silent", _disconnect_silent), ("streaming", _disconnect_streaming)):
        tree = disconnect(srv)
        elapsed = wait_gone(tree, 1.5, "%s script tree" % what)
        print("\n%s %s: script tree gone %.0f ms after the client left" % (worker, what, elapsed * 1000))
    # A worker killed outright: its control connection closes, which is enough.
    sleeper = Background(srv, "/cgi-bin/sleep.sh?30")
    tree = wait_for_tree(srv, "sleep.sh", 3)
    workers = srv.worker_pids()
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    elapsed = wait_gone(tree, 1.0, "the script tree of a killed worker")
    print("%s: script tree gone %.0f ms after its worker was killed" % (worker, elapsed * 1000))
    assert isinstance(sleeper.join(), BaseException)
    wait_until(lambda: srv.get("/cgi-bin/life-ok.sh")[0] == 200, 15, what="new workers to serve")
    assert not scripts_of(srv)


# -- timeouts ------------------------------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_idle_timeout_504_kills_tree(serve, worker):
    srv = serve(worker, cgi_timeout=1, cgi_kill_grace=1)
    req = Background(srv, "/cgi-bin/sleep.sh?30")
    tree = wait_for_tree(srv, "sleep.sh", 3)
    status = req.join()
    assert isinstance(status, tuple) and status[0] == 504, status
    assert 0.9 <= req.ended - req.started < 3.0
    wait_gone(tree, 1.0, "timed-out script tree")
    assert "Script timed out before returning headers: sleep.sh" in srv.log()


def _drip_past_max_runtime(srv: Server) -> tuple[bytes, bool, float, list[int]]:
    """GET the dripping script; returns (body, whether the client saw it cut, seconds, its process tree)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=15)
    start = time.monotonic()
    conn.request("GET", "/cgi-bin/life-drip.sh?60")
    resp = conn.getresponse()
    assert resp.status == 200  # headers came long before the limit
    tree = wait_for_tree(srv, "life-drip.sh", 3)
    try:
        body, cut = resp.read(), False
    except http.client.IncompleteRead as exc:
        body, cut = exc.partial, True
    elapsed = time.monotonic() - start
    conn.close()
    return body, cut, elapsed, tree


@pytest.mark.parametrize("worker", WORKERS)
def test_max_runtime_kills_a_busy_script(serve, worker):
    srv = serve(worker, cgi_timeout=5, cgi_max_runtime=1.5, cgi_kill_grace=1, access_log_format=EXIT_LOG_FORMAT)
    body, _cut, elapsed, tree = _drip_past_max_runtime(srv)
    assert b"tick 5\n" in body and b"tick 60\n" not in body  # it ran, and was stopped
    assert 1.4 <= elapsed < 4.0, elapsed
    wait_gone(tree, 1.0, "script tree past cgi_max_runtime")
    assert "exceeded cgi_max_runtime" in srv.log()
    assert "(cgi_max_runtime passed)" in srv.log()
    wait_until(lambda: access_lines(srv, "life-drip.sh"), 5, what="the access log line")
    assert "exit=signal 15" in access_lines(srv, "life-drip.sh")[0]


@pytest.mark.parametrize("worker", WORKERS)
def test_max_runtime_response_is_cut(serve, worker):
    srv = serve(worker, cgi_timeout=5, cgi_max_runtime=1, cgi_kill_grace=1)
    body, cut, _elapsed, _tree = _drip_past_max_runtime(srv)
    assert b"tick 3\n" in body
    assert cut, "a response stopped by cgi_max_runtime must not look complete"


@pytest.mark.parametrize("worker", WORKERS)
def test_term_ignored_gets_kill_after_grace(serve, worker):
    srv = serve(worker, cgi_timeout=1, cgi_kill_grace=1.5, access_log_format=EXIT_LOG_FORMAT)
    req = Background(srv, "/cgi-bin/life-trap.sh")
    tree = wait_for_tree(srv, "life-trap.sh", 3)
    # The idle timeout sends SIGTERM at ~1 s; the tree ignores it until SIGKILL at ~2.5 s.
    time_term = req.started + 1.0
    wait_until(lambda: time.monotonic() > time_term + 0.5, 5, what="the middle of the grace period")
    assert all(pid_alive(p) for p in tree), "SIGTERM should have been ignored"
    wait_gone(tree, 2.0, "the TERM-ignoring tree after SIGKILL")
    status = req.join()
    assert isinstance(status, tuple) and status[0] == 504, status
    assert req.ended - req.started >= 2.3  # the worker waited for the exit report
    wait_until(lambda: access_lines(srv, "life-trap.sh"), 5, what="the access log line")
    assert "exit=signal 9" in access_lines(srv, "life-trap.sh")[0]
    assert "didn't exit, sending SIGKILL" in srv.log()


# -- exit status ---------------------------------------------------------------

def test_exit_status_reaches_the_access_log(serve):
    # A huge limit must not break the request (the wire fields are 32-bit milliseconds).
    srv = serve("gthread", access_log_format=EXIT_LOG_FORMAT, cgi_max_runtime=5_000_000)
    assert srv.get("/cgi-bin/exit7.sh")[0] == 200
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
    wait_until(lambda: access_lines(srv, "life-ok.sh"), 5, what="the access log lines")
    assert access_lines(srv, "exit7.sh")[0].endswith(" 200 exit=7")
    assert access_lines(srv, "life-ok.sh")[0].endswith(" 200 exit=0")
    assert "exit7.sh (pid" in srv.log() and "exited with status 7" in srv.log()


# -- signals to the master -----------------------------------------------------

@pytest.mark.parametrize("worker", WORKERS)
def test_sighup_under_load_no_failures_and_new_settings(serve, worker):
    srv = serve(worker)
    daemon = srv.daemon_pid()
    old_workers = wait_until(lambda: (lambda w: w if len(w) == 2 else None)(srv.worker_pids()), 10,
                             what="both workers")
    assert isinstance(old_workers, list)
    assert b"LIFE_GEN" not in srv.get("/cgi-bin/env.sh")[2]
    load = Load(srv, "/cgi-bin/life-ok.sh")
    wait_until(lambda: load.count() >= 30, 20, what="some load")
    srv.write_conf(cgi_env={"CGID_TEST_MARKER": str(srv.root), "LIFE_GEN": "2"})
    os.kill(srv.pid, signal.SIGHUP)
    wait_until(lambda: b"LIFE_GEN=2" in srv.get("/cgi-bin/env.sh")[2], 15, interval=0.05,
               what="the reloaded cgi_env")
    wait_gone(old_workers, 15, "the old workers")
    mark = load.count()
    wait_until(lambda: load.count() >= mark + 50, 20, what="load after the reload")
    records = load.stop()
    failures = [r[2] for r in records if r[2] != 200]
    print("\n%s: %d requests across SIGHUP, %d failures" % (worker, len(records), len(failures)))
    assert not failures, failures[:5]
    assert srv.daemon_pid() == daemon  # a reload does not touch the daemon
    assert all(b"LIFE_GEN=2" in srv.get("/cgi-bin/env.sh")[2] for _ in range(4))


def _new_master(srv: Server) -> int:
    """The pid of a second master, from its own ScriptSock ``cgisock.<pid>``."""
    for path in (srv.root / "run").glob("cgisock.*"):
        pid = int(path.name.split(".")[-1])
        if pid != srv.pid and pid_alive(pid):
            return pid
    return 0


def _reexec_failed(srv: Server) -> bool:
    """The re-exec'd master died (its traceback is in the master's stdout log)."""
    return "Traceback" in (srv.root / "stdout.log").read_text(errors="replace")


@pytest.mark.parametrize("worker", WORKERS)
def test_sigusr2_upgrade_then_old_master_stops(serve, worker, monkeypatch):
    # As under the `gunicorn` command: see test_sigusr2_under_python_m_gunicorn for why.
    monkeypatch.setenv("PYTHONSAFEPATH", "1")
    srv = serve(worker)
    run = srv.root / "run"
    old_sock = run / ("cgisock.%d" % srv.pid)
    os.kill(srv.pid, signal.SIGUSR2)
    new = wait_until(lambda: _new_master(srv) or _reexec_failed(srv), 20, what="the new master's socket")
    assert isinstance(new, int) and new > 1, srv.log()
    new_sock = run / ("cgisock.%d" % new)
    try:
        assert new in children_of(srv.pid)
        wait_until(lambda: len(children_of(new)) >= 3, 20, what="the new master's supervisor and workers")
        new_tree = [new] + descendants(new)
        assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
        srv.stop()  # SIGTERM to the old master
        assert not old_sock.exists()
        assert new_sock.exists()
        assert pid_alive(new)
        for _ in range(6):  # only the new master's daemon is left to serve them
            assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
        assert new_sock.exists()
    finally:
        new_tree = [new] + descendants(new)
        try:
            os.kill(new, signal.SIGTERM)
        except ProcessLookupError:
            pass
        wait_gone(new_tree, 20, "the new master and its processes")
    wait_until(lambda: not new_sock.exists(), 5, what="the new master's socket to be removed")


def test_sigusr2_under_python_m_gunicorn(serve):
    srv = serve("gthread")  # the fixture starts `python -m gunicorn`
    os.kill(srv.pid, signal.SIGUSR2)
    wait_until(lambda: _new_master(srv) or _reexec_failed(srv), 20, what="the new master, or its death")
    new = _new_master(srv)
    try:
        assert new, "the re-exec'd master did not come up"
    finally:
        if new:
            tree = [new] + descendants(new)
            os.kill(new, signal.SIGTERM)
            wait_gone(tree, 20, "the new master and its processes")


@pytest.mark.parametrize("worker", WORKERS)
def test_sigterm_lets_requests_in_flight_finish(serve, worker):
    srv = serve(worker, graceful_timeout=5)  # longer than the scripts in flight
    reqs = [Background(srv, "/cgi-bin/sleep.sh?1.5") for _ in range(3)]
    wait_until(lambda: len([p for p in scripts_of(srv) if b"sleep.sh" in cmdline(p)]) >= 3, 10,
               what="three scripts running")
    everything = [srv.pid] + descendants(srv.pid)
    assert srv.stop() == 0
    results = [r.join() for r in reqs]
    for res in results:
        assert isinstance(res, tuple) and res[0] == 200 and res[2] == b"woke\n", res
    assert all(r.ended - r.started >= 1.4 for r in reqs)
    wait_gone(everything, 5, "every process of the server")


# -- endurance -----------------------------------------------------------------

TOTAL_REQUESTS = 10_000
CLIENTS = 4


@pytest.mark.parametrize("worker", WORKERS)
def test_10k_requests_no_leaks(serve, worker, record_property):
    srv = serve(worker, workers=2, threads=4, keepalive=30, accesslog=None)
    daemon = srv.daemon_pid()
    counters = {"ok": 0, "bad": []}
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        try:
            for _ in range(n):
                conn.request("GET", "/cgi-bin/life-ok.sh")
                resp = conn.getresponse()
                body = resp.read()
                with lock:
                    if resp.status == 200 and body == b"ok\n":
                        counters["ok"] += 1
                    else:
                        counters["bad"].append((resp.status, body[:80]))
                if resp.will_close:
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
        finally:
            conn.close()

    def run(n: int) -> None:
        threads = [threading.Thread(target=client, args=(n // CLIENTS,)) for _ in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)

    idle = fd_count(daemon)  # no request yet: no connection open in the daemon

    def own_fds() -> tuple[int, list[int]]:
        """The daemon's and each worker's fds, less the connections the workers keep (their number varies)."""
        kept = kept_connections(srv, daemon)
        return (fd_count(daemon) - sum(kept.values()),
                [fd_count(w) - kept.get(w, 0) for w in sorted(srv.worker_pids())])

    def settled() -> tuple[int, list[int], int]:
        """The daemon's fds, the workers' fds, the process count, once no script runs."""
        wait_until(lambda: not scripts_of(srv), 5, what="no script running")
        # The last replies are sent; the workers' DONE reaches the daemon just after.
        try:
            wait_until(lambda: own_fds()[0] <= idle, 5, what="the daemon to hold only kept connections")
        except AssertionError:
            pass  # reported by the comparison below
        daemon_fds, worker_fds = own_fds()
        return daemon_fds, worker_fds, len(descendants(srv.pid))

    run(200)  # warm up: imports, thread pools, keep-alive connections
    before = settled()
    start = time.monotonic()
    run(TOTAL_REQUESTS)
    elapsed = time.monotonic() - start
    after = settled()
    wait_until(lambda: not zombies([srv.pid] + descendants(srv.pid)), 5, what="no zombie processes")
    record_property("requests_per_second", round(TOTAL_REQUESTS / elapsed))
    record_property("fds_before", before)
    record_property("fds_after", after)
    print("\n%s: %d requests in %.1f s (%.0f/s); daemon fds %d -> %d, worker fds %s -> %s, processes %d -> %d"
          % (worker, TOTAL_REQUESTS, elapsed, TOTAL_REQUESTS / elapsed, before[0], after[0], before[1], after[1],
             before[2], after[2]))
    assert counters["ok"] == TOTAL_REQUESTS + 200, counters["bad"][:5]
    assert srv.daemon_pid() == daemon
    assert after[0] == before[0] == idle
    assert len(after[1]) == len(before[1])
    assert all(a <= b + 2 for a, b in zip(after[1], before[1], strict=True)), (before[1], after[1])
    assert after[2] == before[2]
    # At most one kept connection per request that can run at once.
    assert sum(kept_connections(srv, daemon).values()) <= CLIENTS * 2


# -- cgi_max_scripts ----------------------------------------------------------

def test_max_scripts_queue_then_busy(serve):
    srv = serve("gthread", cgi_max_scripts=2, cgi_queue_timeout=1)
    peak = [0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            daemon = safe_daemon_pid(srv)
            peak[0] = max(peak[0], len([p for p in children_of(daemon) if pid_alive(p)]) if daemon else 0)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # Above the cap, a request waits for a slot: the third starts when one ends.
        reqs = [Background(srv, "/cgi-bin/sleep.sh?0.6") for _ in range(3)]
        results = [r.join() for r in reqs]
        assert all(isinstance(r, tuple) and r[0] == 200 for r in results), results
        durations = sorted(r.ended - r.started for r in reqs)
        assert durations[-1] >= 1.1, durations  # queued behind a 0.6 s script

        # Past cgi_queue_timeout: 503 with Retry-After.
        long = [Background(srv, "/cgi-bin/sleep.sh?2.5") for _ in range(2)]
        wait_until(lambda: len(children_of(srv.daemon_pid())) >= 2, 5, what="two scripts running")
        start = time.monotonic()
        status, headers, _ = srv.get("/cgi-bin/life-ok.sh")
        waited = time.monotonic() - start
        assert status == 503
        assert headers.get("retry-after", "").isdigit()
        assert 0.9 <= waited < 2.0, waited
        assert all(r.join()[0] == 200 for r in long)  # type: ignore[index]
    finally:
        sampling.set()
        sampler.join(5)
    assert peak[0] == 2, peak
    assert "cgi_max_scripts reached" in srv.log()

