"""gunicorn server hooks that start, watch, hand over and stop the CGI supervisor.

Runs in gunicorn's master (``on_starting``, ``on_reload``, ``on_exit``, and
a watcher thread) and in each worker right after the fork (``post_fork``).
Wire them in one line::

    from gunicorn_cgid.hooks import *          # in gunicorn.conf.py

A config file with hooks of its own calls ours from them
(``gunicorn_cgid.hooks.on_starting(server)``...).
"""

from __future__ import annotations

import errno
import math
import os
import select
import signal
import stat
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from gunicorn_cgid import settings
from gunicorn_cgid.daemon import policy
from gunicorn_cgid.daemon.containment import ENV_MODE
from gunicorn_cgid.daemon.spawn import ENV_SPAWN
from gunicorn_cgid.mapping import make_aliases

__all__ = ["on_starting", "on_reload", "post_fork", "pre_request", "on_exit", "pre_exec"]

READY_TIMEOUT_SECONDS = 15.0
RESTART_RETRY_SECONDS = (0.5, 30.0)  # a supervisor that cannot be started again: retried, doubling
POLL_SECONDS = 0.1                   # without pidfd_open (Linux < 5.3): how often the watcher looks
POLICY_WRITE_SECONDS = 5.0           # a supervisor that does not read its policy within this is stuck
# cgi_allow_root from the master's environment, for images whose config is
# not theirs to edit: whoever sets gunicorn's environment controls it anyway.
ENV_ALLOW_ROOT = "GUNICORN_CGID_ALLOW_ROOT"
SCRIPT_LOG_MODE = 0o640
# Signals the supervisor must start with at their default action: Python
# ignores SIGPIPE and SIGXFSZ, and an ignored signal survives exec.
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP, signal.SIGINT, signal.SIGTERM,
                    signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN,
                    signal.SIGTTOU, signal.SIGWINCH)


@dataclass
class SupervisorProcess:
    """The running supervisor: its pid and a pidfd that becomes readable when it exits."""
    pid: int
    pidfd: int = -1  # -1 without pidfd_open: the watcher then polls /proc


class _State:
    """What the master knows of its supervisor; workers inherit a copy by fork."""
    supervisor: SupervisorProcess | None = None
    life_w: int = -1
    sock_path: str = ""


STATE = _State()

# One start or stop of the supervisor at a time: the watcher's restarts,
# on_reload and on_exit all take it.
_lock = threading.Lock()
# Held while the descriptors of a new supervisor exist in the master but are
# not yet in STATE; gunicorn's forks wait for it (os.register_at_fork), so a
# worker never inherits a life-pipe end that post_fork does not know to close.
_fork_lock = threading.Lock()
_fork_guard = False
_watcher: _Watcher | None = None
_retired: list[int] = []  # pidfds of dead supervisors, closed by the thread that may select on them


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
    try:
        prepare_script_log(server.cfg)
    except RuntimeError as exc:
        server.log.error("%s", exc)
        raise
    _install_fork_guard()
    with _lock:
        start_supervisor(server)
    _start_watcher(server)


def prepare_script_log(cfg: Any) -> None:
    """Make sure the workers can write the ScriptLog once they run as ``user``.

    They create it with the first record, as Apache's children do (a good
    request leaves no file). A root master whose workers run as another
    user creates the file for them instead (0640, theirs): the file, never
    its directory, is handed over, since a directory they could write to is
    one where they could also replace whatever else lives there, the
    ScriptSock above all; so the two may not share one. A missing
    directory is created with the master's ownership.
    """
    path = settings.cgi_setting(cfg, "script_log")
    if not path or path == "-":
        return
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    sock_dir = os.path.dirname(os.path.abspath(settings.cgi_setting(cfg, "script_sock")))
    if os.path.realpath(directory) == os.path.realpath(sock_dir):
        raise RuntimeError(
            "script_log %r and script_sock %r are in the same directory %s: the workers write the"
            " ScriptLog, and nobody but the master's user may write where the socket is; move one of them"
            " (for example script_sock = \"run/cgisock\" and script_log = \"logs/cgi.log\")"
            % (settings.cgi_setting(cfg, "script_log"), settings.cgi_setting(cfg, "script_sock"), directory))
    try:
        if not os.path.isdir(directory):
            old_umask = os.umask(0o022)
            try:
                os.makedirs(directory, mode=0o755)
            finally:
                os.umask(old_umask)
        if os.geteuid() == 0 and cfg.uid != 0:
            create_script_log(path, cfg.uid, cfg.gid)
    except OSError as exc:
        raise RuntimeError("cannot create script_log %r: %s" % (path, exc)) from None


def create_script_log(path: str, uid: int, gid: int) -> None:
    """Create ``path`` for the workers (``uid``/``gid``, 0640) unless it exists; never follows a symlink.

    An existing file keeps its owner: a root master never chowns a path a
    worker could have put there (a symlink to /etc/shadow).
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, SCRIPT_LOG_MODE)
    except FileExistsError:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "exists and is not a regular file") from None
        return
    try:
        if os.geteuid() == 0:
            os.fchown(fd, uid, gid)
    finally:
        os.close(fd)


def build_policy(cfg: Any) -> policy.Policy:
    """The limits and run-as accounts the daemon enforces, from the settings (``daemon/policy.py``)."""
    def get(name: str) -> Any:
        return settings.cgi_setting(cfg, name)

    def ms(seconds: float) -> int:
        # Rounded up: a limit of 0.4 ms must not become 0, "no limit".
        return int(math.ceil(float(seconds) * 1000))

    def limit(value: int | None) -> int:
        return -1 if value is None else int(value)

    base = os.getcwd()  # gunicorn's chdir, as the workers resolve the same paths
    global_env = set(get("cgi_env")) | set(get("cgi_pass_env"))
    global_interpreters = set(get("cgi_interpreters").values())
    default_path = settings.CGIPath.default
    docroot = get("cgi_document_root")

    def keep(names: set[str]) -> tuple[str, ...]:
        # PATH is kept only when the configuration chose one (suEXEC sets a safe one otherwise).
        if get("cgi_path") != default_path:
            names = names | {"PATH"}
        return tuple(sorted(names))

    runtime = ms(get("cgi_max_runtime"))
    locations = {"": policy.Location(root=os.path.abspath(docroot) if docroot else "", max_runtime_ms=runtime,
                                      env_keep=keep(global_env), interpreters=tuple(sorted(global_interpreters)))}
    script_alias = get("script_alias")
    for alias in make_aliases(script_alias, base):
        entry = script_alias[alias.prefix]
        entry = entry if isinstance(entry, dict) else {}
        names = global_env | set(entry.get("env", {})) | set(entry.get("pass_env", ()))
        locations[alias.prefix] = policy.Location(
            root=alias.target.rstrip("/") or "/",
            max_runtime_ms=ms(entry["max_runtime"]) if "max_runtime" in entry else runtime,
            user=entry.get("user"), group=entry.get("group"), env_keep=keep(names),
            interpreters=tuple(sorted(global_interpreters | set(entry.get("interpreters", {}).values()))))
    return policy.Policy(
        kill_grace_ms=ms(get("cgi_kill_grace")), max_scripts=int(get("cgi_max_scripts")),
        queue_timeout_ms=ms(get("cgi_queue_timeout")), rlimit_cpu=limit(get("cgi_rlimit_cpu")),
        rlimit_mem=limit(get("cgi_rlimit_mem")), rlimit_nproc=limit(get("cgi_rlimit_nproc")),
        allow_root=bool(get("cgi_allow_root")) or os.environ.get(ENV_ALLOW_ROOT, "") in ("1", "true", "yes"),
        locations=locations)


def send_policy(server: Any, life_w: int) -> bool:
    """Write the current policy to the supervisor's life pipe; False (logged) if it cannot be."""
    try:
        data = policy.encode(build_policy(server.cfg))
    except (ValueError, TypeError) as exc:
        server.log.error("CGI daemon policy cannot be built: %s", exc)
        return False
    deadline = time.monotonic() + POLICY_WRITE_SECONDS
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0 or not select.select([], [life_w], [], remaining)[1]:
                server.log.error("CGI supervisor did not take its new policy within %.0f s", POLICY_WRITE_SECONDS)
                return False
            view = view[os.write(life_w, view):]
        except BlockingIOError:
            continue
        except OSError as exc:
            server.log.error("CGI supervisor: cannot hand over the policy: %s", exc)
            return False
    return True


def on_reload(server: Any) -> None:
    """After SIGHUP: take the new settings, hand the daemon its new policy; retry it; replace a dead supervisor.

    Never raises: gunicorn ends its master, and with it every worker, on an
    exception from a hook during a reload. Whatever goes wrong is logged and
    the watcher keeps trying.
    """
    try:
        _inject(server)
    except Exception:
        pass  # logged by _inject; the workers fall back to the defaults of what is invalid
    try:
        prepare_script_log(server.cfg)
    except Exception as exc:
        server.log.error("%s", exc)
    try:
        with _lock:
            child = STATE.supervisor
            if child is not None and _alive(child):
                # The new limits and accounts first, then the supervisor
                # starts its daemon again if it had given up (FATAL).
                send_policy(server, STATE.life_w)
                os.kill(child.pid, signal.SIGHUP)
            else:
                server.log.error("CGI supervisor is gone; starting a new one")
                _discard()
                start_supervisor(server, replace=True)
        _start_watcher(server)
    except RuntimeError:  # start_supervisor logged why
        server.log.error("CGI supervisor: could not start a new one on SIGHUP; trying again in the background")
    except Exception:
        server.log.exception("CGI supervisor: SIGHUP not handled; the watcher keeps trying")


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
    """After the workers have stopped: stop the watcher, then the supervisor, daemon and scripts."""
    _stop_watcher()
    stop_supervisor(server)


def supervisor_alive() -> bool:
    """Whether the supervisor the master started is still running."""
    child = STATE.supervisor
    return child is not None and _alive(child)


def _alive(child: SupervisorProcess) -> bool:
    if child.pidfd >= 0:
        try:
            return not select.select([child.pidfd], [], [], 0)[0]
        except (OSError, ValueError):
            return False
    try:
        os.kill(child.pid, 0)
        with open("/proc/%d/stat" % child.pid, "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _exit_status(child: SupervisorProcess) -> str:
    """How the supervisor ended, if gunicorn's waitpid(-1) has not taken the status first."""
    if child.pidfd < 0:
        return "exit status unknown"
    try:
        result = os.waitid(os.P_PIDFD, child.pidfd, os.WEXITED | os.WNOHANG)
    except (ChildProcessError, OSError, AttributeError):
        return "exit status unknown"
    if result is None:
        return "exit status unknown"
    if result.si_code == os.CLD_EXITED:
        return "exit status %d" % result.si_status
    return "killed by signal %d" % result.si_status


def _child_env() -> dict[str, str]:
    # A fresh, small environment: nothing of gunicorn's (GUNICORN_FD,
    # LISTEN_FDS...) reaches the daemon; scripts get theirs from the worker.
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": package_parent}
    for name in ("LANG", "LC_ALL", "TZ", "PYTHONHASHSEED", ENV_MODE, ENV_SPAWN):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def start_supervisor(server: Any, replace: bool = False) -> None:
    """Spawn a supervisor and wait until its daemon serves; raises RuntimeError if it does not.

    ``replace``: this master had a supervisor that died; the new one takes
    over the socket path from that supervisor's daemon. The caller holds
    ``_lock``. posix_spawn rather than subprocess: it runs from the watcher
    thread while gunicorn may fork a worker, and subprocess's error pipe,
    copied into that worker, would block it until the worker exits.
    """
    cfg = server.cfg
    path = socket_path(cfg, os.getpid())
    errorlog = cfg.errorlog if isinstance(cfg.errorlog, str) and cfg.errorlog != "-" else "-"
    with _fork_lock:
        life_r, life_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            os.set_inheritable(life_r, True)
            argv = [sys.executable, "-m", "gunicorn_cgid.daemon", path, str(cfg.uid), str(cfg.gid),
                    str(os.getpid()), str(life_r), errorlog, cfg.loglevel or "info"]
            if replace:
                argv.append("replace")
            pid = os.posix_spawn(
                sys.executable, argv, _child_env(),
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                              (os.POSIX_SPAWN_DUP2, out_w, 1)],
                setsid=True, setsigdef=_DEFAULT_SIGNALS, setsigmask=())
        except OSError as exc:
            os.close(life_w)
            os.close(out_r)
            server.log.error("CGI daemon failed to start: cannot run %s: %s", sys.executable, exc)
            raise RuntimeError("CGI daemon failed to start: %s" % exc) from None
        finally:
            os.close(life_r)
            os.close(out_w)
        child = SupervisorProcess(pid, _pidfd(pid))
        STATE.life_w = life_w
    # Written without blocking: a supervisor that never reads must not hang the master.
    os.set_blocking(life_w, False)
    if not send_policy(server, life_w):  # the supervisor reads it before anything else
        _kill(child)  # logged why; its stdout closes, and the start fails below
    line = _read_line(out_r, READY_TIMEOUT_SECONDS)
    if not line.startswith("READY"):
        why = line[len("ERROR: "):] if line.startswith("ERROR: ") else (line or "the CGI supervisor exited")
        server.log.error("CGI daemon failed to start: %s", why)
        _kill(child)
        with _fork_lock:
            if STATE.life_w == life_w:
                STATE.life_w = -1
            os.close(life_w)
        _retire(child)
        raise RuntimeError("CGI daemon failed to start: %s" % why)
    STATE.supervisor = child
    STATE.sock_path = path
    server.log.info("CGI daemon listening at %s (supervisor pid %d, daemon pid %s)",
                    path, pid, line.split()[1] if len(line.split()) > 1 else "?")


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (OSError, AttributeError):
        return -1


def _read_line(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    try:
        while b"\n" not in data:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace").strip()


def _kill(child: SupervisorProcess) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _retire(child: SupervisorProcess | None) -> None:
    """Let go of a supervisor's pidfd; the watcher may be selecting on it, so it closes it."""
    if child is not None and child.pidfd >= 0:
        _retired.append(child.pidfd)
        child.pidfd = -1
    if _watcher is None:
        _close_retired()


def _close_retired() -> None:
    while _retired:
        try:
            os.close(_retired.pop())
        except OSError:
            pass


def _discard() -> None:
    """Forget a dead supervisor: its life pipe and its pidfd. The caller holds ``_lock``."""
    child, STATE.supervisor = STATE.supervisor, None
    with _fork_lock:
        life_w, STATE.life_w = STATE.life_w, -1
    if life_w >= 0:
        os.close(life_w)
    _retire(child)


def stop_supervisor(server: Any) -> None:
    """Stop the supervisor (with its daemon and scripts) and close the life pipe."""
    with _lock:
        child = STATE.supervisor
        STATE.supervisor = None
        try:
            if child is not None:
                _stop(server, child)
        finally:
            # Closed last: EOF on this pipe means "the master is gone, stop now".
            with _fork_lock:
                life_w, STATE.life_w = STATE.life_w, -1
            if life_w >= 0:
                os.close(life_w)
            _retire(child)


def _stop(server: Any, child: SupervisorProcess) -> None:
    try:
        os.kill(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    grace = float(settings.cgi_setting(server.cfg, "cgi_kill_grace"))
    deadline = time.monotonic() + grace + 5.0
    while _alive(child):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            server.log.error("CGI supervisor %d did not stop; killing it", child.pid)
            _kill(child)
            return
        if child.pidfd >= 0:
            select.select([child.pidfd], [], [], remaining)
        else:
            time.sleep(0.02)
    _exit_status(child)  # reap it: gunicorn's loop, which would, is over


# -- the watcher ---------------------------------------------------------------

class _Watcher:
    """A thread in the master that starts a new supervisor as soon as the current one dies.

    Why this design: gunicorn has no hook for the death of a child it does
    not know (it reaps it silently with ``waitpid(-1)``), and wrapping the
    arbiter's reap or manage methods would tie us to private names and call
    sites. A pidfd becomes readable when its process exits, whoever reaps
    it, so a thread blocked in ``select`` on it learns of the death at once,
    whatever the cause, with no polling and no signal handler. A pipe whose
    write end only the supervisor holds would tell the same, but any process
    forked while the pipe is being created would hold a copy and hide the
    EOF. The restart takes the same lock as ``on_reload`` and ``on_exit``,
    and ``on_exit`` stops this thread before it stops the supervisor, so a
    stop is never undone by a restart.

    Measured (tests/integration/test_supervision.py under load, 2 cores):
    the first request after ``kill -9`` of the supervisor is served 16 ms
    (gthread) to 96 ms (gevent) later on a quiet machine, 0.2 to 0.6 s on
    one loaded by other test runs. The orphaned daemon leaves at once on its
    death signal; starting the new interpreter takes most of the time
    (about 0.08 s when quiet).
    """

    def __init__(self, server: Any) -> None:
        self.server = server
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe()
        self.thread = threading.Thread(target=self._run, name="gunicorn-cgid-watcher", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping = True
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(READY_TIMEOUT_SECONDS + 5.0)
        self.close()

    def wake(self) -> None:
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.wake_r = self.wake_w = -1

    def _run(self) -> None:
        # Signals to the master are for gunicorn's main thread: one that the
        # kernel gave to this thread would wait there until the main loop's
        # next timeout.
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        failures = 0
        while not self.stopping:
            child = STATE.supervisor
            fds = [self.wake_r]
            if child is None:
                timeout: float | None = min(RESTART_RETRY_SECONDS[1], RESTART_RETRY_SECONDS[0] * 2 ** failures)
            elif child.pidfd >= 0:
                fds.append(child.pidfd)
                timeout = None
            else:
                timeout = POLL_SECONDS
            try:
                ready = select.select(fds, [], [], timeout)[0]
            except (OSError, ValueError):
                ready = []  # the pidfd was retired meanwhile: look again
            if self.wake_r in ready:
                try:
                    os.read(self.wake_r, 64)
                except OSError:
                    pass
            with _lock:
                _close_retired()
                if self.stopping:
                    return
                if STATE.supervisor is not child or (child is not None and _alive(child)):
                    continue  # replaced meanwhile (on_reload), or still there
                try:
                    if child is not None:
                        self.server.log.error("CGI supervisor is gone; starting a new one (pid %d, %s)",
                                              child.pid, _exit_status(child))
                        _discard()
                    start_supervisor(self.server, replace=True)
                    failures = 0
                except Exception:  # start_supervisor logged why
                    failures += 1
                    self.server.log.error("CGI supervisor could not be started again; next try in %.1f s",
                                          min(RESTART_RETRY_SECONDS[1], RESTART_RETRY_SECONDS[0] * 2 ** failures))


def _start_watcher(server: Any) -> None:
    global _watcher
    if _watcher is not None and _watcher.thread.is_alive():
        _watcher.server = server
        _watcher.wake()
        return
    _watcher = _Watcher(server)
    _watcher.start()


def _stop_watcher() -> None:
    global _watcher
    watcher, _watcher = _watcher, None
    if watcher is not None:
        watcher.stop()
    with _lock:
        _close_retired()


# -- forks of the master -------------------------------------------------------

def _install_fork_guard() -> None:
    global _fork_guard
    if not _fork_guard:
        os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                            after_in_child=_after_fork_in_child)
        _fork_guard = True


def _before_fork() -> None:
    _fork_lock.acquire()


def _after_fork_in_parent() -> None:
    _fork_lock.release()


def _after_fork_in_child() -> None:
    """In a worker (or a re-exec'ing master): the watcher thread did not come along; drop its descriptors."""
    global _fork_lock, _lock, _watcher
    _fork_lock = threading.Lock()
    _lock = threading.Lock()
    watcher, _watcher = _watcher, None
    if watcher is not None:
        watcher.close()
    child = STATE.supervisor
    if child is not None and child.pidfd >= 0:
        try:
            os.close(child.pidfd)
        except OSError:
            pass
        child.pidfd = -1
    _close_retired()
