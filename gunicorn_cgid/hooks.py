"""gunicorn server hooks that start, hand over and stop the CGI supervisor.

Runs in gunicorn's master (``on_starting``, ``on_reload``, ``on_exit``) and in
each worker right after the fork (``post_fork``). Wire them in one line::

    from gunicorn_cgid.hooks import *          # in gunicorn.conf.py

A config file with hooks of its own calls ours from them
(``gunicorn_cgid.hooks.on_starting(server)``...).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from typing import Any

from gunicorn_cgid import settings

__all__ = ["on_starting", "on_reload", "post_fork", "pre_request", "on_exit", "pre_exec"]

READY_TIMEOUT_SECONDS = 15.0


class _State:
    """What the master knows of its supervisor; workers inherit a copy by fork."""
    supervisor: subprocess.Popen | None = None
    life_w: int = -1
    sock_path: str = ""


STATE = _State()


def socket_path(cfg: Any, master_pid: int) -> str:
    """Absolute ScriptSock path with the master's pid appended (as mod_cgid does)."""
    base = settings.cgi_setting(cfg, "script_sock")
    return "%s.%d" % (os.path.abspath(base), master_pid)


def _inject(server: Any) -> None:
    try:
        settings.inject(server.cfg)
    except ValueError as exc:
        server.log.error("%s", exc)
        raise RuntimeError(str(exc)) from None


def on_starting(server: Any) -> None:
    """Check our settings and start the supervisor, before any worker exists."""
    _inject(server)
    # Import the app here, while still root: workers drop privileges before
    # they load it, and share these pages by fork. Everything in it looks up
    # socket, select and threading at call time, so gevent's patching holds.
    import gunicorn_cgid.worker.app  # noqa: F401
    prepare_script_log(server.cfg)
    start_supervisor(server)


def prepare_script_log(cfg: Any) -> None:
    """Make sure the workers can create the ScriptLog once they run as ``user``.

    Workers write it after dropping privileges, as Apache's children do, and
    create it with the first record (a good request leaves no file). A
    missing directory is created here, owned by the workers' user, so that a
    root master does not leave them one they cannot write to.
    """
    path = settings.cgi_setting(cfg, "script_log")
    if not path or path == "-":
        return
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(directory):
        return
    try:
        os.makedirs(directory, mode=0o755)
        if os.geteuid() == 0:
            os.chown(directory, cfg.uid, cfg.gid)
    except OSError as exc:
        raise RuntimeError("cannot create the directory of script_log %r: %s" % (path, exc)) from None


def on_reload(server: Any) -> None:
    """After SIGHUP: take the new settings; start a supervisor if ours is gone."""
    _inject(server)
    if not supervisor_alive():
        server.log.error("CGI supervisor is gone; starting a new one")
        stop_supervisor(server)
        start_supervisor(server)


def post_fork(server: Any, worker: Any) -> None:
    """In the worker: drop the master's end of the life pipe, hand the worker its context."""
    if STATE.life_w >= 0:
        try:
            os.close(STATE.life_w)
        except OSError:
            pass
        STATE.life_w = -1
    STATE.supervisor = None
    from gunicorn_cgid.worker import context
    context.install(worker.cfg, worker.log, STATE.sock_path)


def pre_request(worker: Any, req: Any) -> None:
    """In the worker, before each request: hand the app the request's headers as they arrived.

    WSGI joins repeated headers with "," and hides their order; gunicorn
    passes its request object to this hook on HTTP/1 and HTTP/2 alike.
    """
    from gunicorn_cgid.worker import context
    context.remember_request(req)


def pre_exec(server: Any) -> None:
    """Before a USR2 re-exec: run ``python -m gunicorn`` as a module again.

    gunicorn re-execs ``sys.argv``; under ``python -m gunicorn`` that is the
    path of gunicorn's ``__main__.py``, run as a script, which puts gunicorn's
    package directory first on ``sys.path`` where its ``http`` package
    shadows the standard library's, and the new master cannot import us.
    """
    args = server.START_CTX.get("args", [])
    if len(args) > 1 and args[1].replace(os.sep, "/").endswith("gunicorn/__main__.py"):
        server.START_CTX["args"] = [args[0], "-m", "gunicorn"] + args[2:]


def on_exit(server: Any) -> None:
    """After the workers have stopped: stop the supervisor, daemon and scripts."""
    stop_supervisor(server)


def supervisor_alive() -> bool:
    sup = STATE.supervisor
    if sup is None:
        return False
    try:
        os.kill(sup.pid, 0)
    except ProcessLookupError:
        return False
    return sup.poll() is None


def _child_env() -> dict[str, str]:
    # A fresh, small environment: nothing of gunicorn's (GUNICORN_FD,
    # LISTEN_FDS...) reaches the daemon; scripts get theirs from the worker.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": package_parent}
    for name in ("LANG", "LC_ALL", "TZ", "PYTHONHASHSEED"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def start_supervisor(server: Any) -> None:
    cfg = server.cfg
    path = socket_path(cfg, os.getpid())
    errorlog = cfg.errorlog if isinstance(cfg.errorlog, str) and cfg.errorlog != "-" else "-"
    life_r, life_w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn_cgid.daemon", path, str(cfg.uid), str(cfg.gid),
             str(os.getpid()), str(life_r), errorlog, cfg.loglevel or "info"],
            pass_fds=(life_r,), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            env=_child_env(), start_new_session=True,
        )
    finally:
        os.close(life_r)
    line = _read_line(proc, READY_TIMEOUT_SECONDS)
    if not line.startswith("READY"):
        os.close(life_w)
        why = line[len("ERROR: "):] if line.startswith("ERROR: ") else (line or "the CGI supervisor exited")
        server.log.error("CGI daemon failed to start: %s", why)
        _kill(proc)
        raise RuntimeError("CGI daemon failed to start: %s" % why)
    STATE.supervisor = proc
    STATE.life_w = life_w
    STATE.sock_path = path
    server.log.info("CGI daemon listening at %s (supervisor pid %d, daemon pid %s)",
                    path, proc.pid, line.split()[1] if len(line.split()) > 1 else "?")


def _read_line(proc: subprocess.Popen, timeout: float) -> str:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    proc.stdout.close()
    return data.decode("utf-8", "replace").strip()


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_supervisor(server: Any) -> None:
    proc = STATE.supervisor
    STATE.supervisor = None
    life_w, STATE.life_w = STATE.life_w, -1
    try:
        if proc is not None:
            _stop(server, proc)
    finally:
        # Closed last: EOF on this pipe means "the master is gone, stop now".
        if life_w >= 0:
            os.close(life_w)


def _stop(server: Any, proc: subprocess.Popen) -> None:
    try:
        os.kill(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    grace = float(settings.cgi_setting(server.cfg, "cgi_kill_grace"))
    deadline = time.monotonic() + grace + 5.0
    while time.monotonic() < deadline:
        try:
            pid, _ = os.waitpid(proc.pid, os.WNOHANG)
        except ChildProcessError:
            pid = proc.pid if not _exists(proc.pid) else 0
        if pid:
            return
        time.sleep(0.02)
    server.log.error("CGI supervisor %d did not stop; killing it", proc.pid)
    _kill(proc)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
