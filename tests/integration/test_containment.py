"""Containment: no process a script starts outlives its request, in both modes (gthread and gevent).

``escape-setsid.sh`` leaves two processes outside its process group, the way
the issue describes (a double fork into a session of its own, a second
setsid below it) and writes their pids to a file, so that each test knows
what it is looking for. The mode is forced with GUNICORN_CGID_CONTAINMENT:
``cgroup`` (skipped where cgroup v2 cannot be delegated) and ``pgroup``.
Every wait polls with a deadline.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import pytest

from gunicorn_cgid.daemon import containment, spawn

from .conftest import CGI_BIN, Server, pid_alive, wait_until

WORKERS = ["gthread", "gevent"]
MODES = ["cgroup", "pgroup"]
MODE_LINES = {"cgroup": "containment: cgroup v2 at ", "pgroup": "containment: process groups + subreaper sweep"}


def cgroup_v2_writable() -> bool:
    where, _why = containment.find_cgroup2()
    if where is None:
        return False
    probe = os.path.join(where, "gunicorn-cgid-probe.%d" % os.getpid())
    try:
        os.mkdir(probe)
    except OSError:
        return False
    ok = os.path.exists(os.path.join(probe, "cgroup.kill"))
    os.rmdir(probe)
    return ok


CGROUP_OK = cgroup_v2_writable()


def cgroup_root(master_pid: int) -> str | None:
    where, _why = containment.find_cgroup2()
    return os.path.join(where, "gunicorn-cgid.%d" % master_pid) if where else None


def script_cgroups(master_pid: int) -> list[str]:
    """The per-script cgroups under every daemon of this master."""
    root = cgroup_root(master_pid)
    out = []
    if root and os.path.isdir(root):
        for daemon_dir in os.listdir(root):
            path = os.path.join(root, daemon_dir)
            if daemon_dir.startswith("d") and os.path.isdir(path):
                out.extend(os.path.join(path, name) for name in os.listdir(path)
                           if name.startswith("s") and os.path.isdir(os.path.join(path, name)))
    return out


def read_pids(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except (OSError, ValueError):
        return []


def alive(pids: list[int]) -> list[int]:
    return [p for p in pids if pid_alive(p)]


def error_log(srv: Server) -> str:
    return srv.errorlog.read_text(errors="replace") if srv.errorlog.exists() else ""


def mode_setup(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if mode == "cgroup" and not CGROUP_OK:
        pytest.skip("no writable cgroup v2 with cgroup.kill here")
    monkeypatch.setenv(containment.ENV_MODE, mode)


class Held:
    """A request to ``escape-setsid.sh/hold`` in a thread: headers come, the body never ends."""

    def __init__(self, srv: Server, pids_file: Path) -> None:
        self.status = 0
        self.conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
        self.thread = threading.Thread(target=self._run, args=(pids_file,), daemon=True)
        self.thread.start()

    def _run(self, pids_file: Path) -> None:
        try:
            self.conn.request("GET", "/cgi-bin/escape-setsid.sh/hold?%s" % pids_file)
            resp = self.conn.getresponse()
            self.status = resp.status
            resp.read()
        except (OSError, http.client.HTTPException):
            pass

    def close(self) -> None:
        self.conn.close()
        self.thread.join(30)


def check_escape_is_contained(srv: Server, scratch: Path, mode: str) -> None:
    """The escapees of a finished request go within 2 s; those of one in progress live until it ends."""
    assert MODE_LINES[mode] in error_log(srv), error_log(srv)[-2000:]

    # A request that ends: nothing it started is left 2 s later.
    pids_file = scratch / "escaped-1"
    status, _, body = srv.get("/cgi-bin/escape-setsid.sh?%s" % pids_file)
    assert (status, body) == (200, b"escaped\n"), (status, body, error_log(srv)[-2000:])
    pids = read_pids(pids_file)
    assert len(pids) == 2, pids  # sleep 42 in a session of its own, sleep 43 in another below it
    wait_until(lambda: not alive(pids), 2.0, interval=0.01, what="the escaped processes %s to be gone" % pids)
    if mode == "cgroup":
        # Emptied, and kept for the next script rather than removed.
        wait_until(lambda: not any(containment.cg_populated(c) for c in script_cgroups(srv.pid)), 2.0,
                   what="the script's cgroup to be empty")
        kept = script_cgroups(srv.pid)
        assert len(kept) == 1, kept
        status, _, body = srv.get("/cgi-bin/escape-setsid.sh?%s" % (scratch / "escaped-reuse"))
        assert status == 200, (status, body)
        wait_until(lambda: not alive(read_pids(scratch / "escaped-reuse")), 2.0, interval=0.01,
                   what="the escaped processes of the second request to be gone")
        assert script_cgroups(srv.pid) == kept  # the same cgroup served the next script

    # A request in progress keeps what it started while other requests come and go...
    pids_file = scratch / "escaped-2"
    held = Held(srv, pids_file)
    try:
        wait_until(lambda: len(read_pids(pids_file)) == 2, 10, what="the held request's escapees")
        held_pids = read_pids(pids_file)
        for _ in range(3):
            assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
        assert alive(held_pids) == held_pids
        # ...and nothing of it is left once the server has stopped.
        assert srv.stop(signal.SIGINT) == 0
        wait_until(lambda: not alive(held_pids), 2.0, interval=0.01,
                   what="the held request's escapees %s to be gone after the stop" % held_pids)
    finally:
        held.close()
    root = cgroup_root(srv.pid)
    assert root is None or not os.path.exists(root), os.listdir(root)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("worker", WORKERS)
def test_setsid_escape_is_contained(serve, worker, mode, monkeypatch, tmp_path):
    mode_setup(mode, monkeypatch)
    srv = serve(worker, graceful_timeout=1)  # gthread waits that long for the held request at the stop
    assert "spawn: %s" % spawn.path_name() in error_log(srv)
    check_escape_is_contained(srv, tmp_path, mode)


@pytest.mark.parametrize("mode", MODES)
def test_setsid_escape_is_contained_on_the_posix_spawn_path(serve, mode, monkeypatch, tmp_path):
    """Without the C spawn path the daemon moves itself into each script's cgroup around posix_spawn."""
    mode_setup(mode, monkeypatch)
    monkeypatch.setenv(spawn.ENV_SPAWN, "posix")
    srv = serve("gthread", graceful_timeout=1)
    assert "spawn: posix_spawn (the C spawn path is turned off by GUNICORN_CGID_SPAWN=posix)" in error_log(srv)
    check_escape_is_contained(srv, tmp_path, mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
@pytest.mark.parametrize("mode", MODES)
def test_escape_is_contained_when_scripts_run_as_the_workers_user(mode, monkeypatch):
    """A root master, ``user = nobody``: the daemon's cgroup is delegated to that user before the drop."""
    mode_setup(mode, monkeypatch)
    root = Path(tempfile.mkdtemp(prefix="cgid-contain-", dir="/tmp"))
    srv = None
    try:
        os.chmod(root, 0o755)
        scratch = root / "scratch"
        scratch.mkdir(mode=0o777)
        os.chmod(scratch, 0o777)  # the escapees, running as nobody, write their pids here
        srv = Server(root, "gthread", {"user": "nobody", "group": "nogroup", "graceful_timeout": 1,
                                       "script_alias": {"/cgi-bin/": str(CGI_BIN) + "/"}})
        srv.start()
        if mode == "cgroup":
            daemon_dirs = [os.path.join(cgroup_root(srv.pid) or "", d) for d in os.listdir(cgroup_root(srv.pid) or "")
                           if d.startswith("d")]
            assert daemon_dirs and all(os.stat(d).st_uid == 65534 for d in daemon_dirs), daemon_dirs
        check_escape_is_contained(srv, scratch, mode)
        wait_until(lambda: not srv.leftovers(), 5, what="every process of the server to exit")
        assert not list((root / "run").iterdir())
    finally:
        if srv is not None:
            srv.stop()
            srv.kill_everything()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("mode", MODES)
def test_master_kill9_takes_escaped_processes_of_requests_in_progress(serve, mode, monkeypatch, tmp_path):
    """The daemon stops with a request in progress: its final sweep (or cgroup.kill) ends the escapees too."""
    mode_setup(mode, monkeypatch)
    srv = serve("gthread")
    pids_file = tmp_path / "escaped"
    held = Held(srv, pids_file)
    try:
        wait_until(lambda: len(read_pids(pids_file)) == 2, 10, what="the held request's escapees")
        pids = read_pids(pids_file)
        os.kill(srv.pid, signal.SIGKILL)
        wait_until(lambda: not alive(pids), 2.0, interval=0.01,
                   what="the escapees %s to be gone after the master's death" % pids)
    finally:
        held.close()
    root = cgroup_root(srv.pid)
    wait_until(lambda: root is None or not os.path.exists(root), 2.0, what="the cgroups to be removed")

