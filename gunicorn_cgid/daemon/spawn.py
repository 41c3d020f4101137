"""Starting scripts, killing their process groups, dropping privileges.

Runs in the daemon. A script is exec'd with no shell and no PATH search
(Apache's ``APR_PROGRAM``), in a session of its own so that the whole tree it
starts can be killed at once, with the worker's sockets as its stdio.
``posix_spawn`` uses vfork, so a spawn never copies the daemon's address space.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import os
import pwd
import resource  # before privileges drop: the interpreter's files may not be readable after
import signal
import subprocess

from gunicorn_cgid.wire import SpawnRequest

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = None


def _prctl(option: int, value: int) -> bool:
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        return _libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(sig: int) -> bool:
    """Ask the kernel to send ``sig`` when our parent exits (Linux)."""
    return _prctl(PR_SET_PDEATHSIG, sig)


def become_subreaper() -> bool:
    """Adopt the orphans of our scripts, so that we reap them (Linux)."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


# Signals a script must start with at their default action: the daemon
# ignores SIGPIPE, and an ignored signal would survive exec (Apache's scripts
# inherit SIGPIPE ignored, a known annoyance).
_DEFAULT_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP, signal.SIGINT, signal.SIGTERM,
                    signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1, signal.SIGUSR2)


def spawn_script(req: SpawnRequest, fds: list[int]) -> int:
    """Exec the script with ``fds`` as stdin, stdout and stderr; returns its pid.

    posix_spawn (vfork and exec in glibc) costs half the CPU of
    ``subprocess.Popen``; it has no working-directory action in Python 3.11,
    so the single-threaded daemon changes its own directory first. Every
    descriptor of the daemon is close-on-exec. Raises ``OSError`` with the
    exec's errno when the script cannot start (missing interpreter, not
    executable, bad format, bad cwd, limits that cannot be set).
    """
    env: dict[bytes, bytes] = {}
    for item in req.env:
        name, _, value = item.partition(b"=")
        env[name] = value
    limits = _limits(req)
    if limits:
        return _spawn_with_limits(req, fds, env, limits)
    os.chdir(req.cwd)
    return os.posix_spawn(
        req.filename, list(req.argv), env,
        file_actions=[(os.POSIX_SPAWN_DUP2, fds[0], 0), (os.POSIX_SPAWN_DUP2, fds[1], 1),
                      (os.POSIX_SPAWN_DUP2, fds[2], 2)],
        setsid=True, setsigdef=_DEFAULT_SIGNALS, setsigmask=(),
    )


def _limits(req: SpawnRequest) -> list[tuple[int, int]]:
    return [(which, value) for which, value in ((resource.RLIMIT_CPU, req.rlimit_cpu),
                                                (resource.RLIMIT_AS, req.rlimit_mem),
                                                (resource.RLIMIT_NPROC, req.rlimit_nproc)) if value >= 0]


def _spawn_with_limits(req: SpawnRequest, fds: list[int], env: dict[bytes, bytes],
                       limits: list[tuple[int, int]]) -> int:
    """Fork, set the limits in the child, exec: the limits hold from the first instruction.

    Setting them from the daemon after posix_spawn (prlimit) races with the
    script on another core, so scripts with limits pay for a plain fork.
    """
    def set_limits() -> None:
        for which, value in limits:
            resource.setrlimit(which, (value, value))

    try:
        proc = subprocess.Popen(
            list(req.argv), executable=req.filename, cwd=req.cwd, env=env,
            stdin=fds[0], stdout=fds[1], stderr=fds[2], close_fds=True,
            start_new_session=True, restore_signals=True, preexec_fn=set_limits)
    except subprocess.SubprocessError as exc:
        raise OSError(errno.EPERM, "cannot apply cgi_rlimit_* limits: %s" % exc) from None
    # The daemon reaps with wait4; a Popen that thinks its child is still
    # running would try to reap it again when it is collected.
    proc.returncode = 0
    return proc.pid


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, sig: int) -> bool:
    """Signal every process of the group; False when none is left."""
    try:
        os.killpg(pgid, sig)
        if sig == signal.SIGTERM:
            os.killpg(pgid, signal.SIGCONT)  # a stopped process must see TERM
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def drop_privileges(uid: int, gid: int) -> None:
    """setgroups, setgid, then setuid, as mod_unixd; no-op unless root.

    gunicorn itself never calls setgroups for its workers, so root's
    supplementary groups would survive; scripts get the user's own groups.
    """
    if os.geteuid() != 0 or uid == 0:
        return
    try:
        name = pwd.getpwuid(uid).pw_name
        os.initgroups(name, gid)
    except (KeyError, OSError):
        os.setgroups([gid])
    os.setgid(gid)
    os.setuid(uid)
    if os.geteuid() != uid or os.getegid() != gid:
        raise OSError("could not drop privileges to uid %d gid %d" % (uid, gid))


def describe_ids(uid: int, gid: int) -> str:
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return "%s:%s" % (user, group)
