"""Trust boundaries (issue #9): each attack reproduced, shown to fail, with a normal request still served.

* a script replaces the ScriptSock (rename it away, bind its own): the
  socket's directory is root's and nobody else may write there;
* a script (as the workers' user, double-forked) asks the daemon for a
  child: only workers, children of the master, may connect;
* a root master without ``user``: refuses to start, naming user and group;
* 1,100 idle connections under ``ulimit -n 1024``, and a daemon really out
  of descriptors: its CPU stays low and requests are served;
* a request asking for more than the policy gets the policy; a reload hands
  the daemon its new policy.

Tests that need a script to run as another user than root start their own
server under /tmp (pytest's directories are root's alone) and are skipped
when the tests do not run as root.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import gunicorn_cgid
from gunicorn_cgid import wire

from . import workerlike
from .conftest import CGI_BIN, Server, pid_alive, wait_until
from .workerlike import Stdio, read_frames

serve = workerlike.serve_fixture()

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: scripts must run as another user")
WIRE_PY = str(Path(gunicorn_cgid.__file__).parent / "wire.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- helpers -------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc, in seconds."""
    with open("/proc/%d/stat" % pid, "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def socket_count(pid: int) -> int:
    count = 0
    for name in os.listdir("/proc/%d/fd" % pid):
        with contextlib.suppress(OSError):
            count += os.readlink("/proc/%d/fd/%s" % (pid, name)).startswith("socket:")
    return count


def sock_path(srv: Server) -> str:
    return str(next((srv.root / "run").rglob("cgisock.*")))


@contextlib.contextmanager
def fd_limit(soft: int) -> Iterator[None]:
    """Processes started meanwhile inherit ``ulimit -n soft``; ours gets its own limit back after."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def spawn_frame(srv: Server, script: str, *args: str, location: str = "/cgi-bin/", max_runtime_ms: int = 0) -> bytes:
    filename = str(CGI_BIN / script).encode()
    return wire.encode_spawn(wire.SpawnRequest(
        filename=filename, cwd=str(CGI_BIN).encode(), argv=(filename,) + tuple(a.encode() for a in args),
        env=(b"CGID_TEST_MARKER=" + str(srv.root).encode(), b"PATH=/usr/bin:/bin",
             b"QUERY_STRING=" + "+".join(args).encode()),
        location=location, max_runtime_ms=max_runtime_ms, master_pid=srv.pid))


# -- servers whose scripts run as nobody -------------------------------------------

@pytest.fixture
def public_server() -> Iterator:
    """Factory: a server under /tmp (so nobody can reach its scripts) with ``user = "nobody"``."""
    made: list[tuple[Server, Path]] = []

    def start(scripts: dict[str, str], sock: str = "run/cgisock", sticky_run: bool = False,
              **settings: object) -> Server:
        root = Path(tempfile.mkdtemp(prefix="cgid-trust-", dir="/tmp"))
        os.chmod(root, 0o755)
        bin_dir = root / "cgi-bin"
        bin_dir.mkdir()
        for name, text in scripts.items():
            (bin_dir / name).write_text(text)
            os.chmod(bin_dir / name, 0o755)
        shutil.copy(CGI_BIN / "life-ok.sh", bin_dir / "life-ok.sh")
        if sticky_run:  # run/ as a container's emptyDir: writable by all, sticky
            (root / "run").mkdir()
            os.chmod(root / "run", 0o1777)
        srv = Server(root, "gthread", {
            "user": "nobody", "group": "nogroup", "cgi_allow_root": False,
            "script_sock": str(root / sock), "script_alias": {"/cgi-bin/": str(bin_dir) + "/"},
            "cgi_env": {"CGID_TEST_MARKER": str(root), "TRUST_ROOT": str(root), "WIRE_PY": WIRE_PY},
            **settings})
        made.append((srv, root))
        return srv.start()

    yield start
    problems = []
    for srv, root in made:
        problems += srv.shut_down()
        if list(root.rglob("cgisock.*")):
            problems.append("socket not removed: %s" % list(root.rglob("cgisock.*")))
        shutil.rmtree(root, ignore_errors=True)
    assert not problems, problems


HIJACK = r'''#!/usr/bin/python3
"""Try to take the ScriptSock over, as the script of issue #9 did."""
import errno, glob, os, socket
root = os.environ["TRUST_ROOT"]
sock = glob.glob(os.path.join(root, "run", "**", "cgisock.*"), recursive=True)[0]
here = os.path.dirname(sock)
out = ["uid=%d" % os.getuid()]
def attempt(name, fn):
    try:
        fn()
        out.append("%s: done" % name)
    except OSError as exc:
        out.append("%s: %s" % (name, errno.errorcode.get(exc.errno, exc.errno)))
def bind_own():  # beside it, to rename over it next
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock + ".mine")
attempt("rename", lambda: os.rename(sock, sock + ".away"))
attempt("unlink", lambda: os.unlink(sock))
attempt("bind", bind_own)
attempt("rename-dir", lambda: os.rename(here, here + ".away"))
attempt("chmod-dir", lambda: os.chmod(here, 0o777))
print("Content-Type: text/plain\n\n" + "\n".join(out))
'''


@needs_root
@pytest.mark.parametrize("layout", ["run/cgisock", "run/cgid/cgisock in a sticky 1777 run/"])
def test_a_script_cannot_replace_the_socket(public_server, layout):
    sticky = "sticky" in layout
    srv = public_server({"hijack.py": HIJACK}, sock="run/cgid/cgisock" if sticky else "run/cgisock",
                        sticky_run=sticky, script_log="logs/cgi.log")
    path = sock_path(srv)
    before = os.stat(path)
    status, _, body = srv.get("/cgi-bin/hijack.py")
    assert status == 200, srv.log()
    lines = dict(line.split(": ", 1) for line in body.decode().splitlines()[1:])
    assert body.decode().startswith("uid=65534")
    assert lines == {"rename": "EACCES", "unlink": "EACCES", "bind": "EACCES",
                     "rename-dir": "EPERM" if sticky else "EACCES", "chmod-dir": "EPERM"}, body
    after = os.stat(path)
    assert (after.st_ino, after.st_uid, stat.S_IMODE(after.st_mode)) == (before.st_ino, 65534, 0o600)
    sock_dir = os.stat(os.path.dirname(path))
    assert (sock_dir.st_uid, stat.S_IMODE(sock_dir.st_mode)) == (0, 0o755)
    # The ScriptLog's directory stays root's; its file is the workers'.
    logs = os.stat(srv.root / "logs")
    log_file = os.stat(srv.root / "logs" / "cgi.log")
    assert logs.st_uid == 0 and not logs.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    assert (log_file.st_uid, log_file.st_gid, stat.S_IMODE(log_file.st_mode)) == (65534, 65534, 0o640)
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200


@needs_root
def test_the_issue_layout_socket_beside_the_log_refuses_to_start(tmp_path):
    # Issue #9's config: script_log = "logs/cgi.log" beside script_sock = "logs/cgisock".
    srv = Server(tmp_path, "gthread", {"user": "nobody", "group": "nogroup", "cgi_allow_root": False,
                                       "script_sock": "logs/cgisock", "script_log": "logs/cgi.log"})
    srv.start(wait=False)
    assert srv.proc is not None and srv.proc.wait(30) != 0
    text = srv.log()
    assert "are in the same directory" in text and "move one of them" in text, text
    assert not (tmp_path / "logs").exists() or (tmp_path / "logs").stat().st_uid == 0


ASK_DAEMON = r'''#!/usr/bin/python3
"""Connect to the ScriptSock and ask for a child with LD_PRELOAD and no limits, directly and double-forked."""
import glob, importlib.util, os, socket, sys
spec = importlib.util.spec_from_file_location("wire", os.environ["WIRE_PY"])
wire = importlib.util.module_from_spec(spec)
sys.modules["wire"] = wire
spec.loader.exec_module(wire)
root = os.environ["TRUST_ROOT"]
path = glob.glob(os.path.join(root, "run", "cgisock.*"))[0]
master = int(path.rsplit(".", 1)[1])

def ask(tag):
    marker = os.path.join(root, "escaped-" + tag)
    req = wire.SpawnRequest(filename=b"/bin/sh", cwd=b"/", argv=(b"/bin/sh", b"-c", b"touch " + marker.encode()),
                            env=(b"LD_PRELOAD=/tmp/evil.so",), location="/cgi-bin/", max_runtime_ms=0,
                            master_pid=master)
    data = wire.encode_spawn(req)
    pairs = [socket.socketpair() for _ in range(3)]
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    try:
        s.connect(path)
        fds = b"".join(b.fileno().to_bytes(4, "little") for _, b in pairs)
        s.sendmsg([data[:5]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        s.sendall(data[5:])
        reply = s.recv(4096)
    except OSError as exc:
        return "%s: refused (%s)" % (tag, type(exc).__name__)
    if not reply:
        return "%s: refused (closed)" % tag
    return "%s: answered %r" % (tag, reply[4:5])

results = [ask("direct")]
r, w = os.pipe()
if os.fork() == 0:            # the child forks again and exits: the grandchild is an orphan
    if os.fork() == 0:
        os.close(r)
        os.write(w, ask("double-forked").encode())
        os._exit(0)
    os._exit(0)
os.close(w)
os.wait()
results.append(os.read(r, 4096).decode())
print("Content-Type: text/plain\n\n" + "\n".join(results))
'''


@needs_root
def test_a_script_asking_the_daemon_for_a_child_is_refused(public_server):
    srv = public_server({"ask-daemon.py": ASK_DAEMON})
    status, _, body = srv.get("/cgi-bin/ask-daemon.py")
    assert status == 200, srv.log()
    lines = body.decode().strip().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["direct: refused", "double-forked: refused"], body
    assert not list(srv.root.glob("escaped-*"))
    log = srv.errorlog.read_text()
    refusals = [line for line in log.splitlines() if "refused ScriptSock connection" in line]
    assert len(refusals) == 2, refusals
    assert all("uid 65534" in line and "only workers may ask for scripts" in line for line in refusals)
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200


def test_a_connection_from_outside_the_master_is_refused_and_logged_once(serve):
    # The test process is no worker either: many connections, few log lines.
    srv = serve("gthread")
    for _ in range(30):
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(sock_path(srv))
            with contextlib.suppress(BrokenPipeError):
                s.sendall(wire.frame(wire.PING))
            try:
                assert s.recv(64) == b""  # closed without a PONG
            except ConnectionResetError:
                pass  # closed with our PING unread
    wait_until(lambda: "refused ScriptSock connection from pid %d" % os.getpid() in srv.log(), 5,
               what="the refusal in the log")
    assert srv.errorlog.read_text().count("refused ScriptSock connection from pid %d" % os.getpid()) == 1
    # A worker's PING (the health endpoint's) still passes, and so does the worker-like broker's.
    s = workerlike.connect(srv)
    s.sendall(wire.frame(wire.PING))
    assert read_frames(s, 1, timeout=10.0)[0].kind == wire.PONG
    s.close()
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200


@pytest.mark.skipif(os.geteuid() != 0, reason="a root master is needed")
@pytest.mark.parametrize("settings, names", [
    ({}, ["uid 0", "user", "group"]),
    ({"user": "root"}, ["uid 0", "user", "group"]),
    ({"user": "nobody"}, ["gid 0", "group"]),
    ({"user": "nobody", "group": 0}, ["gid 0", "group"]),
])
def test_a_root_master_never_runs_scripts_as_root(serve, settings, names):
    srv = serve("gthread", wait=False, cgi_allow_root=False, **settings)
    assert srv.proc is not None and srv.proc.wait(30) != 0
    text = srv.log()
    line = next(line for line in text.splitlines() if "refusing to run CGI scripts with" in line)
    assert all(name in line for name in names + ["cgi_allow_root"]), line


def test_the_root_opt_in_is_a_warning_at_every_start(serve):
    srv = serve("gthread")  # conftest's servers set cgi_allow_root
    if os.geteuid() == 0:
        assert "cgi_allow_root is set: CGI scripts run as root:root" in srv.log()
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200


# -- floods ------------------------------------------------------------------------

def test_1100_idle_connections_under_ulimit_1024(serve):
    with fd_limit(1024):
        srv = serve("gthread")
    daemon = srv.daemon_pid()
    with open("/proc/%d/limits" % daemon) as f:
        assert any(line.startswith("Max open files") and line.split()[3] == "1024" for line in f)
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
    cpu_before = cpu_seconds(daemon)
    began = time.monotonic()
    outsiders, brokered = [], []
    try:
        for _ in range(1100):  # from this process, which is no worker: refused at once
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(sock_path(srv))
            outsiders.append(s)
        for _ in range(1100):  # from a child of the master, as a worker would: idle, never a byte
            brokered.append(workerlike.connect(srv, timeout=10))
        # Held open and idle: the daemon neither spins nor runs out of descriptors.
        assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
        held_from = cpu_seconds(daemon)
        time.sleep(1.0)  # a measuring window, not a wait for anything
        held_cpu = cpu_seconds(daemon) - held_from
        assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
        sockets = socket_count(daemon)
    finally:
        for s in outsiders + brokered:
            s.close()
    total_cpu = cpu_seconds(daemon) - cpu_before
    print("\n2200 connections in %.1f s: daemon CPU %.2f s in all, %.2f s while they were held idle 1 s;"
          " %d sockets in the daemon" % (time.monotonic() - began, total_cpu, held_cpu, sockets))
    assert held_cpu < 0.1
    assert total_cpu < 0.5 * max(1.0, time.monotonic() - began)
    assert sockets < 200  # the oldest idle ones were dropped: at most an eighth of the limit
    log = srv.errorlog.read_text()
    assert "Too many open files" not in log
    assert log.count("refused ScriptSock connection") <= 2
    assert 1 <= log.count("ScriptSock flood") <= 5
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200


def send_requests(srv: Server, count: int, into: list[tuple[socket.socket, Stdio]]) -> None:
    """``count`` worker-like connections, each with a whole request for life-ok.sh sent, added to ``into``."""
    for _ in range(count):
        s, io = workerlike.connect(srv), Stdio()
        into.append((s, io))
        io.send(s, spawn_frame(srv, "life-ok.sh"))


def assert_each_ran(sent: list[tuple[socket.socket, Stdio]]) -> None:
    for s, _io in sent:
        assert [f.kind for f in read_frames(s, 2, timeout=10.0)] == [wire.STARTED, wire.EXITED]


def close_requests(sent: list[tuple[socket.socket, Stdio]]) -> None:
    for s, io in sent:
        s.close()
        io.close()


def test_out_of_descriptors_the_daemon_pauses_instead_of_spinning(serve):
    # Queued requests hold the script's three descriptors each: with one
    # script slot taken and a low limit, the daemon runs out of descriptors.
    with fd_limit(128):
        srv = serve("gthread", cgi_max_scripts=1, cgi_queue_timeout=30)
    daemon = srv.daemon_pid()
    holder, holder_io = workerlike.connect(srv), Stdio()
    holder_io.send(holder, spawn_frame(srv, "sleep.sh", "30"))
    (started,) = read_frames(holder, 1, timeout=10.0)
    assert started.kind == wire.STARTED
    queued: list[tuple[socket.socket, Stdio]] = []
    try:
        send_requests(srv, 40, into=queued)
        try:
            wait_until(lambda: "pausing accepts" in srv.errorlog.read_text(), 10,
                       what="the daemon to reach its descriptor limit")
        except AssertionError:
            raise AssertionError("no pause; daemon fds %d\n%s" % (len(os.listdir("/proc/%d/fd" % daemon)),
                                                                   srv.log())) from None
        cpu_from = cpu_seconds(daemon)
        time.sleep(1.0)  # a measuring window, not a wait for anything
        paused_cpu = cpu_seconds(daemon) - cpu_from
        holder.sendall(wire.encode_kill(wire.REASON_KILLED))  # the slot frees: the queue drains
        assert_each_ran(queued)
        assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
    finally:
        close_requests(queued + [(holder, holder_io)])
    log = srv.errorlog.read_text()
    print("\nat the descriptor limit: daemon CPU %.3f s over 1 s paused" % paused_cpu)
    assert paused_cpu < 0.1
    assert log.count("pausing accepts") == 1
    assert "accepting again after" in log
    assert "Too many open files" not in log and "more than 3 file descriptors" not in log


def test_a_burst_of_whole_requests_accepted_at_once_is_not_a_flood(serve):
    """Connections accepted in one batch, each with its whole request sent: read, none dropped as a flood."""
    with fd_limit(128):  # at most 8 connections still sending their request, per peer
        srv = serve("gthread")
    daemon = srv.daemon_pid()
    conns: list[tuple[socket.socket, Stdio]] = []
    os.kill(daemon, signal.SIGSTOP)  # the connections wait in the backlog, their requests sent
    try:
        send_requests(srv, 20, into=conns)
    finally:
        os.kill(daemon, signal.SIGCONT)
    try:
        assert_each_ran(conns)
    finally:
        close_requests(conns)
    assert "ScriptSock flood" not in srv.errorlog.read_text()


def test_partial_frames_are_bounded_in_total(serve):
    srv = serve("gthread")
    daemon = srv.daemon_pid()
    chunk = wire.HEADER.pack(wire.MAX_REQUEST_FRAME_BYTES, wire.SPAWN) + b"\0" * (4 * 1024 * 1024 - 64)
    held = []
    try:
        for _ in range(40):  # 160 MiB of partial frames offered
            s = workerlike.connect(srv, timeout=10)
            with contextlib.suppress(OSError):
                s.sendall(chunk)
            held.append(s)
        assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
        with open("/proc/%d/status" % daemon) as f:
            rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    finally:
        for s in held:
            s.close()
    print("\n40 connections offering 4 MiB partial frames: daemon RSS %d MB" % (rss_kb // 1024))
    assert rss_kb < 120 * 1024
    assert "ScriptSock flood" in srv.errorlog.read_text()
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200


# -- the policy ----------------------------------------------------------------------

def run_direct(srv: Server, frame: bytes) -> tuple[wire.Exited, float]:
    s, io = workerlike.connect(srv), Stdio()
    began = time.monotonic()
    try:
        io.send(s, frame)
        frames = read_frames(s, 2, timeout=20)
        assert [f.kind for f in frames] == [wire.STARTED, wire.EXITED], frames
        return wire.decode_exited(frames[1].payload), time.monotonic() - began
    finally:
        s.close()
        io.close()


def test_a_request_cannot_ask_for_more_than_the_policy(serve):
    srv = serve("gthread", cgi_max_runtime=1, cgi_kill_grace=0.2, script_alias={
        "/cgi-bin/": str(CGI_BIN) + "/", "/short/": {"path": str(CGI_BIN) + "/", "max_runtime": 0.5}})
    # More than the policy (60 s, or none at all): the policy's second.
    for asked in (60000, 0):
        exited, took = run_direct(srv, spawn_frame(srv, "sleep.sh", "30", max_runtime_ms=asked))
        assert exited.reason == wire.REASON_MAX_RUNTIME, exited
        assert 0.9 < took < 5, took
    # Less than the policy: granted.
    exited, took = run_direct(srv, spawn_frame(srv, "sleep.sh", "30", max_runtime_ms=200))
    assert exited.reason == wire.REASON_MAX_RUNTIME and took < 0.9, took
    # The location's own, shorter limit holds whatever the request says.
    exited, took = run_direct(srv, spawn_frame(srv, "sleep.sh", "30", location="/short/", max_runtime_ms=60000))
    assert exited.reason == wire.REASON_MAX_RUNTIME and took < 0.9, took
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200


def test_a_reload_hands_the_daemon_its_new_policy(serve):
    srv = serve("gthread", cgi_kill_grace=0.2)
    daemon = srv.daemon_pid()
    srv.settings["cgi_max_runtime"] = 0.5
    srv.write_conf()
    srv.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_until(lambda: "cgid daemon: new policy" in srv.errorlog.read_text(), 15, what="the new policy")
    assert srv.daemon_pid() == daemon  # taken by the running daemon, no restart
    exited, took = run_direct(srv, spawn_frame(srv, "sleep.sh", "30", max_runtime_ms=60000))
    assert exited.reason == wire.REASON_MAX_RUNTIME and took < 3, (exited, took)
    assert pid_alive(daemon)
    assert srv.get("/cgi-bin/life-ok.sh")[0] == 200
