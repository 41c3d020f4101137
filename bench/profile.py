#!/usr/bin/env python3
"""Where gunicorn-cgid's CPU goes: flame graphs of a worker and of the daemon under load.

    pip install py-spy
    python bench/profile.py                  # gthread, 16 connections, 15 s
    python bench/profile.py --worker gevent --seconds 30

Starts gunicorn-cgid on a free loopback port with the compiled hello-world
program, loads it with wrk (or a Python client when wrk is missing), and
records one worker and the daemon with ``py-spy record --gil``: only samples
holding the GIL, that is Python running on a CPU, not threads waiting in
poll(). Writes ``profile/<worker>-worker.svg`` and ``profile/daemon.svg``
next to this file. System-call time does not show up in them: count the
calls with ``strace -c -f -p PID`` instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from load import Scenario, http_request, run_python_client
from procs import BenchError, cmdline, process_table
from run import CGI_SRC, compile_cgi
from servers import free_port, gunicorn_argv, gunicorn_env

OUT = Path(__file__).resolve().parent / "profile"


def config(tmp: Path, port: int, worker: str) -> Path:
    lines = [
        "from gunicorn_cgid.hooks import *  # noqa: F401,F403",
        f"script_sock = {str(tmp / 'run' / 'cgisock')!r}",
        f"script_alias = {{'/cgi-bin/': {str(tmp / 'cgi-bin') + '/'!r}}}",
        f"bind = '127.0.0.1:{port}'",
        "workers = 2",
        f"worker_class = {worker!r}",
        "threads = 32",
        f"errorlog = {str(tmp / 'error.log')!r}",
        "loglevel = 'warning'",
    ]
    if os.geteuid() == 0:
        lines.append("cgi_allow_root = True  # a profile run, on loopback")
    conf = tmp / "gunicorn.conf.py"
    conf.write_text("\n".join(lines) + "\n")
    return conf


def wait_ready(port: int, master: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if master.poll() is not None:
            raise BenchError("gunicorn exited with status %s" % master.returncode)
        try:
            status = http_request(port, "GET", "/cgi-bin/hello")[0]
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise BenchError("gunicorn-cgid did not answer within the deadline")


def roles(master_pid: int) -> tuple[int, int]:
    """One worker's pid and the daemon's (the supervisor's child)."""
    table = process_table()
    children = [p.pid for p in table.values() if p.ppid == master_pid]
    supervisors = [pid for pid in children if b"gunicorn_cgid.daemon" in cmdline(pid)]
    workers = [pid for pid in children if pid not in supervisors]
    daemons = [p.pid for p in table.values() if supervisors and p.ppid == supervisors[0]
               and b"gunicorn_cgid.daemon" in cmdline(p.pid)]
    if not workers or not daemons:
        raise BenchError("cannot find a worker and the daemon under master %d" % master_pid)
    return workers[0], daemons[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", choices=("gthread", "gevent"), default="gthread")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=16)
    args = parser.parse_args()
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cgid-profile-") as name:
        tmp = Path(name)
        (tmp / "run").mkdir(mode=0o700)
        (tmp / "cgi-bin").mkdir()
        compile_cgi(CGI_SRC / "hello.c", tmp / "cgi-bin" / "hello")
        port = free_port()
        master = subprocess.Popen([*gunicorn_argv(), "-c", str(config(tmp, port, args.worker)), "gunicorn_cgid:app"],
                                  env=gunicorn_env(), cwd=str(tmp))
        try:
            wait_ready(port, master, time.monotonic() + 30)
            worker, daemon = roles(master.pid)
            scenario = Scenario("hello", "/cgi-bin/hello", args.connections)
            load_seconds = args.seconds + 2
            if shutil.which("wrk"):
                load = subprocess.Popen(["wrk", "-t2", "-c%d" % args.connections, "-d%ds" % load_seconds,
                                         "http://127.0.0.1:%d/cgi-bin/hello" % port], stdout=subprocess.DEVNULL)
                finish_load = load.wait
            else:
                thread = threading.Thread(target=run_python_client, args=(port, scenario, load_seconds), daemon=True)
                thread.start()
                finish_load = thread.join
            time.sleep(1)  # the load's warm-up is not profiled (pacing, not synchronisation)
            spies = [subprocess.Popen([pyspy, "record", "--gil", "--pid", str(pid), "--duration",
                                       str(int(args.seconds)), "--format", "flamegraph", "--output",
                                       str(OUT / filename)], stdout=subprocess.DEVNULL)
                     for pid, filename in ((worker, "%s-worker.svg" % args.worker), (daemon, "daemon.svg"))]
            for spy in spies:
                spy.wait()
            finish_load()
        finally:
            master.send_signal(signal.SIGTERM)
            try:
                master.wait(30)
            except subprocess.TimeoutExpired:
                master.kill()
    print("wrote %s and %s" % (OUT / ("%s-worker.svg" % args.worker), OUT / "daemon.svg"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
