"""Real gunicorn servers for the integration tests.

``serve(worker_class, **settings)`` writes a gunicorn.conf.py in a temporary
directory, starts ``python -m gunicorn`` on a free loopback port and waits
until it answers. Every process it started (master, workers, supervisor,
daemon, scripts) is gone when the test ends, or the test fails.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

CGI_BIN = Path(__file__).resolve().parent.parent / "cgi-bin"
WORKERS = ["gthread", "gevent", "sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02,
               what: str = "condition") -> object:
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def children_of(pid: int) -> list[int]:
    """Direct children, from /proc."""
    out = []
    for child in all_pids():
        try:
            with open("/proc/%d/stat" % child) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(child)
    return out


def cmdline(pid: int) -> bytes:
    """A process's command line, words separated by spaces; b"" once it is gone."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ")
    except OSError:
        return b""


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children_of(todo.pop())
        out.extend(kids)
        todo.extend(kids)
    return out


def script_pids(srv: Server) -> list[int]:
    """Running scripts of ``srv``: its marker is in their environment (cgi_env), not just their command line."""
    out = []
    for pid in processes_with_env_marker(str(srv.root)):
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                if b"CGID_TEST_MARKER=" in f.read():
                    out.append(pid)
        except OSError:
            pass
    return out


_SS_LINE = re.compile(r"^u_str\s+\S+\s+\d+\s+\d+\s+\S+\s+(\d+)\s+\S+\s+(\d+)")


def socket_inodes(pid: int) -> set[int]:
    out = set()
    for name in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, name))
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(int(link[8:-1]))
    return out


def kept_connections(srv: Server, daemon: int) -> dict[int, int]:
    """Worker pid -> the daemon connections it holds (kept between requests), from ``ss -x``."""
    if shutil.which("ss") is None:
        pytest.skip("needs ss (iproute2) to tell the connections workers keep")
    owner: dict[int, int] = {}
    for pid in srv.worker_pids():
        try:
            owner.update(dict.fromkeys(socket_inodes(pid), pid))
        except OSError:
            pass
    mine = socket_inodes(daemon)
    listing = subprocess.run(["ss", "-xn"], capture_output=True, text=True, check=True).stdout
    counts: dict[int, int] = {}
    for line in listing.splitlines():
        m = _SS_LINE.match(line)
        if m and int(m.group(1)) in mine and int(m.group(2)) in owner:
            worker = owner[int(m.group(2))]
            counts[worker] = counts.get(worker, 0) + 1
    return counts


def processes_with_env_marker(marker: str) -> list[int]:
    """Pids whose command line or environment carries ``marker`` (to find orphans)."""
    out = []
    for pid in all_pids():
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                cmd = f.read()
            with open("/proc/%d/environ" % pid, "rb") as f:
                env = f.read()
        except OSError:
            continue
        if (marker.encode() in cmd or marker.encode() in env) and pid_alive(pid):
            out.append(pid)
    return out


class Server:
    def __init__(self, root: Path, worker_class: str, settings: dict[str, object]) -> None:
        self.root = root
        self.worker_class = worker_class
        self.port = free_port()
        self.errorlog = root / "error.log"
        self.accesslog = root / "access.log"
        self.conf = root / "gunicorn.conf.py"
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self.known: set[int] = set()

    def write_conf(self, **overrides: object) -> None:
        base: dict[str, object] = {
            "bind": "127.0.0.1:%d" % self.port,
            "worker_class": self.worker_class,
            "workers": 2,
            "threads": 8,
            "worker_connections": 1000,
            "chdir": str(self.root),
            "errorlog": str(self.errorlog),
            "accesslog": str(self.accesslog),
            "loglevel": "info",
            "control_socket_disable": True,
            "graceful_timeout": 2,  # teardown: a worker still booting ignores TERM until then
            "script_sock": str(self.root / "run" / "cgisock"),
            "script_alias": {"/cgi-bin/": str(CGI_BIN) + "/"},
            "cgi_env": {"CGID_TEST_MARKER": str(self.root)},
            "cgi_allow_root": True,
        }
        base.update(self.settings)
        base.update(overrides)
        lines = ["from gunicorn_cgid.hooks import *  # noqa"]
        for key, value in base.items():
            lines.append("%s = %r" % (key, value))
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, wait: bool = True) -> Server:
        self.write_conf()
        env = dict(os.environ)
        env.pop("GUNICORN_CMD_ARGS", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(self.conf), "gunicorn_cgid:app"],
            cwd=str(self.root), env=env, stdin=subprocess.DEVNULL,
            stdout=open(self.root / "stdout.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        if wait:
            wait_until(self.ready, 20, what="gunicorn to answer on port %d (log: %s)" % (self.port, self.log()))
        return self

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("gunicorn exited with %s:\n%s" % (self.proc.returncode, self.log()))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                pass
        except OSError:
            return False
        self.remember()
        return True

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def remember(self) -> None:
        self.known.update(descendants(self.pid))

    def supervisor_pid(self) -> int:
        for pid in children_of(self.pid):
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"gunicorn_cgid.daemon" in f.read():
                    return pid
        raise AssertionError("no supervisor under master %d" % self.pid)

    def daemon_pid(self) -> int:
        kids = children_of(self.supervisor_pid())
        for pid in kids:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"gunicorn_cgid.daemon" in f.read():
                    return pid
        raise AssertionError("no daemon under the supervisor")

    def worker_pids(self) -> list[int]:
        sup = self.supervisor_pid()
        return [p for p in children_of(self.pid) if p != sup]

    def log(self) -> str:
        parts = []
        for path in (self.errorlog, self.root / "stdout.log"):
            if path.exists():
                parts.append(path.read_text(errors="replace")[-6000:])
        return "\n".join(parts)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()} | {"_reason": resp.reason}, data
        finally:
            conn.close()

    def get(self, path: str, **kw: object) -> tuple[int, dict, bytes]:
        return self.request("GET", path, **kw)  # type: ignore[arg-type]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        self.remember()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def leftovers(self) -> list[int]:
        pids = {p for p in self.known if pid_alive(p)}
        pids.update(processes_with_env_marker(str(self.root)))
        return sorted(pids)

    def shut_down(self) -> list[str]:
        """Stop the server and wait for every process it started; what was left behind (then killed)."""
        self.stop()
        try:
            wait_until(lambda: not self.leftovers(), 5, what="processes of the server to exit")
        except AssertionError:
            left = self.leftovers()
            self.kill_everything()
            return ["left behind: %s" % left]
        return []

    def kill_everything(self) -> None:
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
def serve(tmp_path_factory: pytest.TempPathFactory):
    """Factory fixture: ``serve("gthread", cgi_timeout=5)`` returns a running Server."""
    servers: list[Server] = []

    def start(worker_class: str = "gthread", wait: bool = True, **settings: object) -> Server:
        root = tmp_path_factory.mktemp("srv")
        os.chmod(root, 0o755)
        server = Server(root, worker_class, settings)
        servers.append(server)
        return server.start(wait=wait)

    yield start
    problems = []
    for server in servers:
        problems += server.shut_down()
        sock_dir = server.root / "run"
        if sock_dir.exists() and any(sock_dir.iterdir()):
            problems.append("socket not removed: %s" % list(sock_dir.iterdir()))
    assert not problems, problems
