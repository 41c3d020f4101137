#!/usr/bin/env python3
"""Benchmark gunicorn-cgid against Apache httpd's mod_cgid.

    python bench/run.py [--duration 5] [--quick] [--write]

Everything runs on 127.0.0.1 inside a fresh temporary directory: the C CGI
programs are compiled there, Apache gets a generated minimal configuration,
and gunicorn-cgid is started twice (gthread and gevent workers).  All three
servers stay up for the whole run and every scenario is measured against
each of them in turn, so slow drift of the machine hits all servers alike.
Load comes from ``wrk`` when it is installed, else from a small threaded
Python client.  See bench/README.md for what the columns mean.
"""

from __future__ import annotations

import argparse
import grp
import http.client
import json
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
CGI_SRC = BENCH_DIR / "cgi-bin"
APACHE_BIN = os.environ.get("APACHE2", "/usr/sbin/apache2")
APACHE_MODULE_DIRS = ("/usr/lib/apache2/modules", "/usr/lib64/httpd/modules", "/usr/libexec/apache2")
APACHE_MODULES = (
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("mime_module", "mod_mime.so"),
    ("alias_module", "mod_alias.so"),
    ("cgid_module", "mod_cgid.so"),
    ("unixd_module", "mod_unixd.so"),
)
MIB = 1024 * 1024
UPLOAD_SIZE = MIB
BIG_SIZE = MIB
READY_TIMEOUT = 30.0
GUNICORN_WORKERS = 2
STOP_TIMEOUT = 8.0


class BenchError(Exception):
    """A failure that should be reported as one line, without a traceback."""


def one_line(text: str) -> str:
    """First line of a message, plus its last line when it has several (the
    last line of a server log tail is usually the actual exception)."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return "unknown error"
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0].rstrip(':')}: {lines[-1]}"


# --------------------------------------------------------------------------
# scenarios and results


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    connections: int
    method: str = "GET"
    body_size: int = 0

    def check(self, status: int, body: bytes) -> str | None:
        """Return why a sample response is wrong, or None when it is right."""
        if status != 200:
            title = re.search(rb"<title>(.*?)</title>", body, re.IGNORECASE | re.DOTALL)
            return f"HTTP {status} {(title.group(1) if title else body[:80])!r}"
        if self.path.endswith("/big"):
            if len(body) != BIG_SIZE:
                return f"body is {len(body)} bytes, expected {BIG_SIZE}"
        elif self.path.endswith("/upload"):
            if body.strip() != str(self.body_size).encode():
                return f"body {body[:100]!r}, expected {self.body_size}"
        elif body != b"hello\n":
            return f"body {body[:100]!r}, expected b'hello\\n'"
        return None


SCENARIOS = (
    Scenario("hello.c c=1", "/cgi-bin/hello", 1),
    Scenario("hello.c c=16", "/cgi-bin/hello", 16),
    Scenario("hello.c c=64", "/cgi-bin/hello", 64),
    Scenario("hello.sh c=16", "/cgi-bin/hello.sh", 16),
    Scenario("big.c 1 MiB c=16", "/cgi-bin/big", 16),
    Scenario("upload.c 1 MiB c=16", "/cgi-bin/upload", 16, "POST", UPLOAD_SIZE),
)


@dataclass
class Result:
    requests: int = 0
    duration: float = 0.0
    bytes: int = 0  # received by the client plus request bodies sent
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    error: str | None = None  # set when the row could not be measured
    cpu_ms_per_req: float | None = None  # server processes only, not the CGIs

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration > 0 else 0.0

    @property
    def mibps(self) -> float:
        return self.bytes / MIB / self.duration if self.duration > 0 else 0.0


# --------------------------------------------------------------------------
# process handling


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, session id, start time) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[3]), int(fields[19])


def _cpu_ticks(pid: int) -> tuple[int, int] | None:
    """(start time, user + system clock ticks) of a live process, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[19]), int(fields[11]) + int(fields[12])


def server_cpu(root: int) -> dict[int, tuple[int, int]]:
    """CPU ticks of every process of a server, keyed by pid."""
    out = {}
    for pid in _related_processes(root):
        ticks = _cpu_ticks(pid)
        if ticks is not None:
            out[pid] = ticks
    return out


def cpu_seconds_between(before: dict[int, tuple[int, int]],
                        after: dict[int, tuple[int, int]]) -> float:
    """CPU used between two snapshots by the processes alive in both: the
    server's own long-lived processes, not the short-lived CGI programs."""
    ticks = sum(a[1] - before[pid][1] for pid, a in after.items()
                if pid in before and before[pid][0] == a[0])
    return ticks / os.sysconf("SC_CLK_TCK")


def _related_processes(root: int) -> dict[int, int]:
    """Descendants of ``root`` and members of its session, pid -> start time."""
    table: dict[int, tuple[int, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _proc_stat(int(entry.name))
            if st is not None:
                table[int(entry.name)] = st
    found: dict[int, int] = {}
    for pid, (_, sid, start) in table.items():
        if sid == root and pid != os.getpid():
            found[pid] = start
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _, start) in table.items():
            if ppid == parent and pid not in found and pid != os.getpid():
                found[pid] = start
                frontier.append(pid)
    if root in table:
        found[root] = table[root][2]
    return found


_STARTED: list[Managed] = []  # every server started, for cleanup


class Managed:
    """A child started in its own session; stop() ends it and all it spawned."""

    def __init__(self, name: str, argv: list[str], log: Path, **kw) -> None:
        self.name = name
        self.log = log
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fh,
                stderr=subprocess.STDOUT, start_new_session=True, **kw,
            )
        _STARTED.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        pid = self.proc.pid
        related = _related_processes(pid)
        if self.proc.poll() is None:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        # Anything still running that we spawned (including children that
        # moved to their own process group or session) is killed outright.
        related.update(_related_processes(pid))
        for other, start in related.items():
            st = _proc_stat(other)
            if st is not None and st[2] == start:
                try:
                    os.kill(other, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"warning: {self.name} (pid {pid}) did not exit", file=sys.stderr)


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_ready(server: Managed, port: int, deadline: float) -> None:
    """Poll TCP connect, then a GET of the hello CGI, until it answers 200."""
    last = "no attempt"
    while True:
        if not server.alive():
            raise BenchError(
                f"{server.name} exited with status {server.proc.returncode}"
                f" before it was ready:\n{server.log_tail()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                pass
            status, body = http_request(port, "GET", "/cgi-bin/hello", timeout=5.0)
            if status == 200 and body == b"hello\n":
                return
            last = f"HTTP {status}: {body[:200]!r}"
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise BenchError(
                f"{server.name} not ready after {READY_TIMEOUT:.0f}s ({last})"
                f"\n{server.log_tail()}"
            )
        time.sleep(0.1)


def _cmdline(pid: int) -> bytes | None:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None


def wait_workers(server: Managed, expected: int, deadline: float) -> None:
    """Wait until a gunicorn master has ``expected`` workers: they are its
    children with its own command line (the CGI supervisor has another), and
    the first one alone already answers the readiness request."""
    master = server.proc.pid
    while True:
        argv = _cmdline(master)
        workers = 0
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                st = _proc_stat(int(entry.name))
                if st is not None and st[0] == master and _cmdline(int(entry.name)) == argv:
                    workers += 1
        if workers >= expected:
            return
        if not server.alive():
            raise BenchError(f"{server.name} exited with status {server.proc.returncode}"
                             f":\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(f"{server.name} has {workers} of {expected} workers after"
                             f" {READY_TIMEOUT:.0f}s\n{server.log_tail()}")
        time.sleep(0.1)


# --------------------------------------------------------------------------
# building the tree the servers serve


def compile_cgi(src: Path, dest: Path) -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler found (need cc or gcc)")
    base = [cc, "-O2", "-o", str(dest), str(src)]
    static = subprocess.run(base[:2] + ["-static"] + base[2:], check=False, capture_output=True, text=True)
    if static.returncode == 0:
        return "static"
    dynamic = subprocess.run(base, check=False, capture_output=True, text=True)
    if dynamic.returncode != 0:
        raise BenchError(f"compiling {src.name} failed:\n{dynamic.stderr}")
    return "dynamic"


def build_tree(tmp: Path) -> dict[str, str]:
    cgi = tmp / "cgi-bin"
    cgi.mkdir()
    kinds = {}
    for name in ("hello", "big", "upload"):
        kinds[name] = compile_cgi(CGI_SRC / f"{name}.c", cgi / name)
    shutil.copyfile(CGI_SRC / "hello.sh", cgi / "hello.sh")
    for entry in cgi.iterdir():
        entry.chmod(0o755)
    (tmp / "run").mkdir()
    (tmp / "logs").mkdir()
    (tmp / "apache").mkdir()
    # Apache drops to an unprivileged user: it must traverse and execute.
    for path in (tmp, cgi, tmp / "run", tmp / "logs", tmp / "apache"):
        path.chmod(0o755)
    return kinds


# --------------------------------------------------------------------------
# Apache httpd


def apache_identity() -> tuple[str, str]:
    if os.geteuid() != 0:
        user = pwd.getpwuid(os.geteuid()).pw_name
        return user, grp.getgrgid(os.getegid()).gr_name
    for candidate in ("nobody", "www-data", "daemon"):
        try:
            pw = pwd.getpwnam(candidate)
        except KeyError:
            continue
        return pw.pw_name, grp.getgrgid(pw.pw_gid).gr_name
    raise BenchError("running as root but found no unprivileged user (nobody, www-data)")


def apache_compiled_in() -> set[str]:
    out = subprocess.run([APACHE_BIN, "-l"], check=False, capture_output=True, text=True).stdout
    return {line.strip() for line in out.splitlines()}


def apache_config(tmp: Path, port: int) -> Path:
    moddir = next((d for d in APACHE_MODULE_DIRS if Path(d).is_dir()), None)
    if moddir is None:
        raise BenchError(f"no Apache module directory among {APACHE_MODULE_DIRS}")
    builtin = apache_compiled_in()
    load = []
    for ident, so in APACHE_MODULES:
        source_name = so.replace(".so", ".c")
        if source_name in builtin:
            continue
        if not (Path(moddir) / so).exists():
            raise BenchError(f"Apache module {so} not found in {moddir}")
        load.append(f"LoadModule {ident} {moddir}/{so}")
    user, group = apache_identity()
    adir = tmp / "apache"
    mime_types = Path("/etc/mime.types")
    if not mime_types.exists():
        mime_types = adir / "mime.types"
        mime_types.write_text("text/plain txt\n")
    conf = adir / "httpd.conf"
    conf.write_text("\n".join([
        f'ServerRoot "{adir}"',
        f'DefaultRuntimeDir "{adir}"',
        f'PidFile "{adir}/httpd.pid"',
        f'ErrorLog "{tmp}/logs/apache-error.log"',
        "LogLevel warn",
        *load,
        f"User {user}",
        f"Group {group}",
        "ServerName 127.0.0.1",
        f"Listen 127.0.0.1:{port}",
        f'TypesConfig "{mime_types}"',
        f'ScriptSock "{adir}/cgisock"',
        "KeepAlive On",
        "MaxKeepAliveRequests 0",
        "KeepAliveTimeout 5",
        "Timeout 60",
        "StartServers 2",
        "ServerLimit 2",
        "ThreadLimit 64",
        "ThreadsPerChild 64",
        "MaxRequestWorkers 128",
        "MinSpareThreads 64",
        "MaxSpareThreads 128",
        "MaxConnectionsPerChild 0",
        f'DocumentRoot "{adir}"',
        "<Directory />",
        "    AllowOverride None",
        "    Require all denied",
        "</Directory>",
        f'ScriptAlias /cgi-bin/ "{tmp}/cgi-bin/"',
        f'<Directory "{tmp}/cgi-bin">',
        "    AllowOverride None",
        "    Options None",
        "    Require all granted",
        "</Directory>",
        "",
    ]))
    return conf


def start_apache(tmp: Path, port: int) -> Managed:
    if not os.access(APACHE_BIN, os.X_OK):
        raise BenchError(
            f"{APACHE_BIN} not found: install Apache httpd (Debian: apt-get install apache2)"
        )
    conf = apache_config(tmp, port)
    check = subprocess.run([APACHE_BIN, "-t", "-f", str(conf)], check=False, capture_output=True, text=True)
    if check.returncode != 0:
        raise BenchError(f"Apache rejected its generated config:\n{check.stderr}")
    return Managed("apache", [APACHE_BIN, "-f", str(conf), "-DFOREGROUND"],
                   tmp / "logs" / "apache-stdout.log")


# --------------------------------------------------------------------------
# gunicorn-cgid


def gunicorn_supports(flag: str) -> bool:
    out = subprocess.run([sys.executable, "-m", "gunicorn", "--help"],
                         check=False, capture_output=True, text=True)
    return flag in out.stdout


def python_usable_by(user: str, group: str, tmp: Path) -> str | None:
    """None when ``user`` can run this Python and import what the servers
    import lazily, else why not (e.g. a Python installed under /root)."""
    probe = "import resource, gevent, gunicorn.workers.gthread"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], user=user, group=group, extra_groups=[],
            cwd=str(tmp), check=False, capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        return one_line(done.stderr) or f"exit status {done.returncode}"
    return None


def gunicorn_config(tmp: Path, port: int, worker: str, user: tuple[str, str] | None) -> Path:
    lines = [
        "from gunicorn_cgid.hooks import *  # noqa: F401,F403",
        "",
        f"bind = {f'127.0.0.1:{port}'!r}",
        f"chdir = {str(tmp)!r}",
        f"script_sock = {str(tmp / 'run' / 'cgisock')!r}",
        'script_alias = {"/cgi-bin/": "cgi-bin/"}',
        f"workers = {GUNICORN_WORKERS}",
        f"worker_class = {worker!r}",
        f"errorlog = {str(tmp / 'logs' / f'gunicorn-{worker}-error.log')!r}",
        'loglevel = "warning"',
        "timeout = 60",
        "graceful_timeout = 5",
    ]
    if worker == "gthread":
        lines.append("threads = 16")
    if user is not None:
        # Like Apache's User/Group: workers and CGI scripts run unprivileged.
        lines += [f"user = {user[0]!r}", f"group = {user[1]!r}"]
    conf = tmp / f"gunicorn-{worker}.conf.py"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def start_gunicorn(tmp: Path, port: int, worker: str, no_ctl: bool,
                   user: tuple[str, str] | None) -> Managed:
    conf = gunicorn_config(tmp, port, worker, user)
    argv = [sys.executable, "-m", "gunicorn", "-c", str(conf)]
    if no_ctl:
        argv.append("--no-control-socket")
    argv.append("gunicorn_cgid:app")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return Managed(f"gunicorn-cgid {worker}", argv,
                   tmp / "logs" / f"gunicorn-{worker}-stdout.log", env=env, cwd=str(tmp))


# --------------------------------------------------------------------------
# load generation


WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT {\"duration_us\": %d, \"requests\": %d, \"bytes\": %d, " ..
    "\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, " ..
    "\"timeout\": %d, \"p50_us\": %d, \"p99_us\": %d}\n",
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""

_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4, "h": 3.6e6}
_SIZE_UNITS = {"B": 1, "KB": 1024, "MB": MIB, "GB": 1024 * MIB, "TB": MIB * MIB}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def parse_wrk(out: str, body_size: int) -> Result:
    """Read wrk's output: the done() line when present, else its text report."""
    m = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.MULTILINE)
    if m:
        d = json.loads(m.group(1))
        return Result(
            requests=d["requests"], duration=d["duration_us"] / 1e6,
            bytes=d["bytes"] + d["requests"] * body_size,
            p50_ms=d["p50_us"] / 1e3 if d["requests"] else None,
            p99_ms=d["p99_us"] / 1e3 if d["requests"] else None,
            errors=d["status"] + d["connect"] + d["read"] + d["write"] + d["timeout"],
        )
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h), ([\d.]+)([KMGT]?B) read", out)
    if not total:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    requests = int(total.group(1))
    duration = _ms(total.group(2) + total.group(3)) / 1e3
    received = float(total.group(4)) * _SIZE_UNITS[total.group(5)]
    pct = dict(re.findall(r"^\s+(\d+)%\s+([\d.]+(?:us|ms|s|m|h))\s*$", out, re.MULTILINE))
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    return Result(
        requests=requests, duration=duration,
        bytes=int(received) + requests * body_size,
        p50_ms=_ms(pct["50"]) if "50" in pct else None,
        p99_ms=_ms(pct["99"]) if "99" in pct else None,
        errors=errors,
    )


def run_wrk(port: int, sc: Scenario, duration: float, tmp: Path) -> Result:
    script = tmp / "wrk" / f"{sc.method.lower()}-{sc.body_size}.lua"
    if not script.exists():
        script.parent.mkdir(exist_ok=True)
        prelude = ""
        if sc.body_size:
            body = tmp / "wrk" / f"body-{sc.body_size}.bin"
            body.write_bytes(os.urandom(sc.body_size))
            prelude = (
                f'wrk.method = "{sc.method}"\n'
                f'wrk.headers["Content-Type"] = "application/octet-stream"\n'
                f'local f = assert(io.open("{body}", "rb"))\n'
                "wrk.body = f:read(\"*a\")\n"
                "f:close()\n"
            )
        script.write_text(prelude + WRK_DONE)
    secs = max(1, round(duration))
    argv = [
        "wrk", "-t", "1", "-c", str(sc.connections), "-d", f"{secs}s",
        "--timeout", "10s", "--latency", "-s", str(script),
        f"http://127.0.0.1:{port}{sc.path}",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=secs + 30)
    except subprocess.TimeoutExpired:
        raise BenchError("wrk did not finish in time") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{out}")
    return parse_wrk(out, sc.body_size)


def run_python_client(port: int, sc: Scenario, duration: float) -> Result:
    """Fallback load generator: one keep-alive connection per thread."""
    body = os.urandom(sc.body_size) if sc.body_size else None
    headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"bytes": 0, "errors": 0}
    start = time.monotonic()
    stop_at = start + duration

    def worker() -> None:
        local_lat: list[float] = []
        nbytes = errors = 0
        conn = None
        while time.monotonic() < stop_at:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            t0 = time.perf_counter()
            try:
                conn.request(sc.method, sc.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = None
                continue
            local_lat.append((time.perf_counter() - t0) * 1e3)
            nbytes += len(data) + len(str(resp.msg)) + 17 + sc.body_size
            if not 200 <= resp.status < 300:
                errors += 1
            if resp.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with lock:
            latencies.extend(local_lat)
            totals["bytes"] += nbytes
            totals["errors"] += errors

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(sc.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration + 30)
    elapsed = time.monotonic() - start
    if any(t.is_alive() for t in threads):
        raise BenchError("python load generator did not finish in time")
    res = Result(requests=len(latencies), duration=elapsed,
                 bytes=totals["bytes"], errors=totals["errors"])
    if latencies:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        res.p50_ms, res.p99_ms = q[49], q[98]
    return res


# --------------------------------------------------------------------------
# driver


@dataclass
class Server:
    label: str
    port: int
    proc: Managed | None = None
    error: str | None = None
    broken: dict[str, str] = field(default_factory=dict)  # path -> why


def preflight(server: Server) -> None:
    """Check each CGI once; a wrong answer disables that scenario's rows."""
    for sc in SCENARIOS:
        if sc.path in server.broken:
            continue
        body = os.urandom(sc.body_size) if sc.body_size else None
        try:
            status, data = http_request(server.port, sc.method, sc.path, body, timeout=30)
            why = sc.check(status, data)
        except (OSError, http.client.HTTPException) as exc:
            why = f"{type(exc).__name__}: {exc}"
        if why:
            server.broken[sc.path] = f"bad response: {why}"


def measure(server: Server, sc: Scenario, duration: float, warmup: float,
            tmp: Path, use_wrk: bool) -> Result:
    if server.error:
        return Result(error=server.error)
    if sc.path in server.broken:
        return Result(error=server.broken[sc.path])
    if server.proc is not None and not server.proc.alive():
        server.error = f"{server.label} died (status {server.proc.proc.returncode})"
        return Result(error=server.error)

    def once(secs: float) -> Result:
        if use_wrk:
            return run_wrk(server.port, sc, secs, tmp)
        return run_python_client(server.port, sc, secs)

    try:
        if warmup > 0:
            once(warmup)
        root = server.proc.proc.pid if server.proc is not None else None
        before = server_cpu(root) if root is not None else {}
        res = once(duration)
        if root is not None and res.requests:
            cpu = cpu_seconds_between(before, server_cpu(root))
            res.cpu_ms_per_req = cpu * 1e3 / res.requests
        return res
    except BenchError as exc:
        return Result(error=one_line(str(exc)))


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def render_table(rows: list[tuple[Scenario, str, Result]], note: str) -> str:
    out = [
        "| scenario | server | req/s | MiB/s | p50 ms | p99 ms | errors | vs Apache"
        " | server CPU ms/req |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    base = {sc.name: r.rps for sc, label, r in rows if label == "apache" and not r.error}
    for sc, label, r in rows:
        if r.error:
            msg = r.error if len(r.error) <= 160 else r.error[:157] + "..."
            msg = msg.replace("|", "\\|")
            out.append(f"| {sc.name} | {label} | error: {msg} | | | | | | |")
            continue
        ratio = f"{r.rps / base[sc.name]:.2f}" if base.get(sc.name) else "-"
        out.append(
            f"| {sc.name} | {label} | {fmt(r.rps, 0)} | {fmt(r.mibps, 1)} | "
            f"{fmt(r.p50_ms, 2)} | {fmt(r.p99_ms, 2)} | {r.errors} | {ratio} | "
            f"{fmt(r.cpu_ms_per_req, 2)} |"
        )
    return "\n".join(out) + "\n\n" + note + "\n"


def scenario_selected(name: str, only: str) -> bool:
    """Comma-separated terms; a term equal to some scenario's name matches only
    that scenario, any other term matches every name containing it."""
    terms = [t.strip() for t in only.split(",") if t.strip()]
    if not terms:
        return True
    names = {sc.name for sc in SCENARIOS}
    return any(name == t if t in names else t in name for t in terms)


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (5)")
    ap.add_argument("--quick", action="store_true", help="2 s per scenario, short warm-up")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole matrix; the median-req/s run is reported (1)")
    ap.add_argument("--warmup", type=float, default=None,
                    help="seconds of unmeasured load before each measurement (1; 0 with --quick)")
    ap.add_argument("--servers", default="apache,gthread,gevent",
                    help="comma-separated subset of apache,gthread,gevent")
    ap.add_argument("--only", default="", help="comma-separated scenario names (or parts of names) to run")
    ap.add_argument("--python-client", action="store_true", help="do not use wrk even if present")
    ap.add_argument("--write", action="store_true", help="also write the table to bench/results.md")
    ap.add_argument("--gunicorn-as-root", action="store_true",
                    help="when root, do not give gunicorn-cgid an unprivileged user/group")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, logs)")
    args = ap.parse_args(argv)

    duration = 2.0 if args.quick else args.duration
    if duration < 1 or args.rounds < 1:
        ap.error("--duration must be at least 1 and --rounds at least 1")
    warmup = args.warmup if args.warmup is not None else (0.0 if args.quick else 1.0)
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(wanted) - {"apache", "gthread", "gevent"}
    if unknown or not wanted:
        ap.error(f"unknown server(s): {', '.join(sorted(unknown)) or '(none)'}")
    scenarios = [s for s in SCENARIOS if scenario_selected(s.name, args.only)]
    if not scenarios:
        ap.error(f"no scenario matches {args.only!r}")
    use_wrk = shutil.which("wrk") is not None and not args.python_client

    # Turn termination signals into KeyboardInterrupt so the finally block
    # below always stops the servers (SIGINT too: a shell may start us with it
    # ignored; SIGHUP is left alone when ignored, as under nohup).
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {sig: signal.getsignal(sig) for sig in stop_signals}
    for sig in stop_signals:
        if sig != signal.SIGHUP or saved[sig] != signal.SIG_IGN:
            signal.signal(sig, _raise_interrupt)

    load_at_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="gunicorn-cgid-bench-"))
    servers: list[Server] = []
    try:
        kinds = build_tree(tmp)
        no_ctl = gunicorn_supports("--no-control-socket")
        gunicorn_user: tuple[str, str] | None = None
        notes: list[str] = []
        if os.geteuid() == 0 and any(label != "apache" for label in wanted):
            if args.gunicorn_as_root:
                notes.append("gunicorn-cgid ran as root (--gunicorn-as-root).")
            else:
                gunicorn_user = apache_identity()
                why = python_usable_by(*gunicorn_user, tmp)
                if why is not None:
                    print(f"warning: {gunicorn_user[0]} cannot use {sys.executable} ({why});"
                          " gunicorn-cgid runs as root instead", file=sys.stderr)
                    notes.append(f"gunicorn-cgid ran as root: user {gunicorn_user[0]}"
                                 f" cannot use {sys.executable}.")
                    gunicorn_user = None
        for label in wanted:
            srv = Server(label if label == "apache" else f"gunicorn-cgid {label}", free_port())
            servers.append(srv)
            try:
                if label == "apache":
                    srv.proc = start_apache(tmp, srv.port)
                else:
                    srv.proc = start_gunicorn(tmp, srv.port, label, no_ctl, gunicorn_user)
            except BenchError as exc:
                srv.error = one_line(str(exc))
        deadline = time.monotonic() + READY_TIMEOUT
        for srv in servers:
            if srv.proc is None:
                continue
            try:
                wait_ready(srv.proc, srv.port, deadline)
                if srv.label != "apache":
                    wait_workers(srv.proc, GUNICORN_WORKERS, deadline)
                preflight(srv)
            except BenchError as exc:
                srv.error = one_line(str(exc))
                print(f"{srv.label}: {exc}", file=sys.stderr)
        if all(s.error for s in servers):
            raise BenchError("no server came up: " + "; ".join(f"{s.label}: {s.error}" for s in servers))

        client = "wrk" if use_wrk else "python http.client"
        print(f"# client {client}, {duration:g}s per run, {warmup:g}s warm-up, "
              f"{args.rounds} round(s); CGI binaries {', '.join(sorted(set(kinds.values())))}",
              file=sys.stderr)
        runs: dict[tuple[str, str], list[Result]] = {}
        for rnd in range(args.rounds):
            for sc in scenarios:
                for srv in servers:
                    res = measure(srv, sc, duration, warmup, tmp, use_wrk)
                    runs.setdefault((sc.name, srv.label), []).append(res)
                    state = res.error or (f"{res.rps:,.0f} req/s  p99 {fmt(res.p99_ms, 2)} ms"
                                          f"  errors {res.errors}"
                                          f"  cpu {fmt(res.cpu_ms_per_req, 2)} ms/req")
                    print(f"[{rnd + 1}/{args.rounds}] {sc.name:<22} {srv.label:<22} {state}",
                          file=sys.stderr, flush=True)

        rows = []
        for sc in scenarios:
            for srv in servers:
                results = runs[(sc.name, srv.label)]
                good = sorted((r for r in results if not r.error), key=lambda r: r.rps)
                rows.append((sc, srv.label, good[(len(good) - 1) // 2] if good else results[-1]))
        note = (
            f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs"
            f" (load average {load_at_start:.1f} at start), {client}, "
            f"{duration:g}s per run after {warmup:g}s warm-up, {args.rounds} round(s)"
            + (" (median by req/s)" if args.rounds > 1 else "")
            + f", {'static' if set(kinds.values()) == {'static'} else 'dynamic'} C CGIs."
            + "".join(" " + n for n in notes)
        )
        table = render_table(rows, note)
        print(table)
        if args.write:
            (BENCH_DIR / "results.md").write_text("# gunicorn-cgid vs Apache mod_cgid\n\n" + table)
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted, stopping servers", file=sys.stderr)
        return 130
    finally:
        for sig in stop_signals:  # cleanup must not be cut short
            signal.signal(sig, signal.SIG_IGN)
        while _STARTED:
            _STARTED.pop().stop()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if args.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
