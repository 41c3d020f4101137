"""Starting scripts, killing their process groups, dropping privileges.

Runs in the daemon. A script is exec'd with no shell and no PATH search
(Apache's ``APR_PROGRAM``), in a session of its own so that the whole tree it
starts can be killed at once, with the worker's sockets as its stdio.

Two spawn paths. The C one (``_spawn``, built by ``pip install`` when a
compiler is there) vforks with the GIL released and does in the child,
before the exec, all that a script needs: its cgroup, its user's ids
(``run_as``, see ``suexec``) and its rlimits. Without it, ``posix_spawn``
(also a vfork) starts plain scripts, and a script with rlimits or another
user is started by a fork: the child sets its groups, gid and uid, then the
limits, then execs. posix_spawn cannot change ids, and changing the
daemon's own real uid around a vfork would let that user signal the daemon
meanwhile. That fork costs the daemon about 0.8 ms of CPU per script
(measured on a 15 MB daemon), against 0.1 ms for a vfork.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import itertools
import os
import pwd
import resource  # before privileges drop: the interpreter's files may not be readable after
import signal
import subprocess
from collections.abc import Collection
from typing import Any

from gunicorn_cgid.daemon import suexec
from gunicorn_cgid.wire import SpawnRequest

# "posix" in the daemon's environment (from gunicorn's master): the pure-Python
# path even where the C one is built.
ENV_SPAWN = "GUNICORN_CGID_SPAWN"


def _turned_off() -> bool:
    return os.environ.get(ENV_SPAWN, "auto").strip().lower() == "posix"


def _load_native() -> Any:
    if _turned_off():
        return None
    try:
        from gunicorn_cgid.daemon import _spawn
    except ImportError:  # built without a compiler: os.posix_spawn, and a fork for limits and ids
        return None
    return _spawn


_native = _load_native()


def joins_cgroup() -> bool:
    """Whether a script joins its cgroup itself, before its exec (``cgroup_fd``): the C path."""
    return _native is not None


def path_name() -> str:
    """The spawn path, for the daemon's start-up line."""
    if _native is not None:
        return "C vfork"
    return "posix_spawn (the C spawn path is %s)" % (
        "turned off by %s=posix" % ENV_SPAWN if _turned_off() else "not built")


class CgroupJoinError(OSError):
    """The child could not write itself into its cgroup."""

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


_EQUALS = itertools.repeat(b"=")
_ONCE = itertools.repeat(1)


def spawn_script(req: SpawnRequest, fds: list[int], run_as: suexec.RunAs | None = None,
                 env_keep: Collection[bytes] = (), cgroup_fd: int = -1) -> int:
    """Exec the script with ``fds`` as stdin, stdout and stderr; returns its pid.

    Every descriptor of the daemon is close-on-exec. Raises ``OSError``
    with the errno of the step that failed (missing interpreter, not
    executable, bad format, bad cwd, limits that cannot be set, ids that
    cannot be taken) and ``CgroupJoinError`` when the child cannot enter
    the cgroup whose ``cgroup.procs`` is ``cgroup_fd`` (only given when
    ``joins_cgroup()``).

    ``run_as``: the child takes that user's groups, gid and uid, in that
    order, before the limits and the exec, and its environment is cleaned
    as suEXEC cleans it, keeping the names in ``env_keep`` (those the
    configuration sets). The caller has run ``suexec.check`` first.
    """
    if run_as is not None and (run_as.uid == 0 or run_as.gid == 0 or 0 in run_as.groups):
        raise OSError(errno.EPERM, "refusing to run a script as uid/gid 0")
    if _native is not None:
        return _spawn_native(req, fds, run_as, env_keep, cgroup_fd)
    # posix_spawn takes a mapping (and joins it again): split in C, not in a loop.
    env: dict[bytes, bytes] = dict(map(bytes.split, req.env, _EQUALS, _ONCE))  # type: ignore[arg-type]
    limits = _limits(req)
    if run_as is not None:
        return _spawn_forked(req, fds, suexec.clean_env(env, env_keep), limits, run_as)
    if limits:
        return _spawn_forked(req, fds, env, limits, None)
    # No working-directory action in Python 3.11's posix_spawn: the
    # single-threaded daemon changes its own directory first.
    os.chdir(req.cwd)
    return os.posix_spawn(
        req.filename, list(req.argv), env,
        file_actions=[(os.POSIX_SPAWN_DUP2, fds[0], 0), (os.POSIX_SPAWN_DUP2, fds[1], 1),
                      (os.POSIX_SPAWN_DUP2, fds[2], 2)],
        setsid=True, setsigdef=_DEFAULT_SIGNALS, setsigmask=(),
    )


def _spawn_native(req: SpawnRequest, fds: list[int], run_as: suexec.RunAs | None,
                  env_keep: Collection[bytes], cgroup_fd: int) -> int:
    env = req.env
    uid = gid = -1
    groups: tuple[int, ...] = ()
    if run_as is not None:
        cleaned = suexec.clean_env(dict(map(bytes.split, env, _EQUALS, _ONCE)), env_keep)  # type: ignore[arg-type]
        env = tuple(map(b"=".join, cleaned.items()))
        uid, gid, groups = run_as.uid, run_as.gid, tuple(run_as.groups)
    pid, step, err = _native.spawn(req.filename, req.argv, env, req.cwd, (fds[0], fds[1], fds[2]), cgroup_fd,
                                   tuple(_limits(req)), uid, gid, groups)
    if pid:
        return pid
    if step == _native.STEP_CGROUP:
        raise CgroupJoinError(err, os.strerror(err))
    what = _STEPS.get(step)
    if what is None:  # chdir, ids, exec: the errno says it, as from os.chdir and posix_spawn
        raise OSError(err, os.strerror(err), os.fsdecode(req.cwd if step == _native.STEP_CHDIR else req.filename))
    raise OSError(err, "%s: %s" % (what, os.strerror(err)))


_STEPS = {} if _native is None else {
    _native.STEP_CLONE: "cannot start a process",
    _native.STEP_SIGNALS: "cannot reset its signals",
    _native.STEP_SETSID: "cannot give it a session",
    _native.STEP_STDIO: "cannot give it its stdin, stdout and stderr",
    _native.STEP_LIMITS: "cannot apply cgi_rlimit_* limits",
}


def _limits(req: SpawnRequest) -> list[tuple[int, int]]:
    return [(which, value) for which, value in ((resource.RLIMIT_CPU, req.rlimit_cpu),
                                                (resource.RLIMIT_AS, req.rlimit_mem),
                                                (resource.RLIMIT_NPROC, req.rlimit_nproc)) if value >= 0]


def _spawn_forked(req: SpawnRequest, fds: list[int], env: dict[bytes, bytes],
                  limits: list[tuple[int, int]], run_as: suexec.RunAs | None) -> int:
    """Fork; in the child set groups, gid, uid, then the limits; exec.

    The ids and the limits hold from the script's first instruction.
    Setting limits from the daemon after posix_spawn (prlimit) races with
    the script on another core, and posix_spawn cannot change ids, so these
    scripts pay for a fork. The ids are set by CPython's C child code
    (setgroups, setregid, setreuid), before ``preexec_fn``; without limits
    no Python code runs in the child.
    """
    def set_limits() -> None:
        for which, value in limits:
            resource.setrlimit(which, (value, value))

    ids: dict[str, object] = {}
    if run_as is not None:
        ids = {"user": run_as.uid, "group": run_as.gid, "extra_groups": list(run_as.groups)}
    try:
        proc = subprocess.Popen(
            list(req.argv), executable=req.filename, cwd=req.cwd, env=env,
            stdin=fds[0], stdout=fds[1], stderr=fds[2], close_fds=True,
            start_new_session=True, restore_signals=True, preexec_fn=set_limits if limits else None,
            **ids)  # type: ignore[call-overload]
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


def drop_privileges(uid: int, gid: int, keep_setid: bool = False) -> None:
    """setgroups, setgid, then setuid, as mod_unixd; no-op unless root.

    gunicorn itself never calls setgroups for its workers, so root's
    supplementary groups would survive; scripts get the user's own groups.

    ``keep_setid`` (some location runs its scripts as its own user): keep
    CAP_SETUID, CAP_SETGID and CAP_KILL through the setuid and nothing else
    (see ``suexec``). A daemon that is not root must already hold them
    (systemd's ``AmbientCapabilities=``), else OSError says to start as
    root. A daemon that stays root (workers as root) keeps what it has.
    """
    if keep_setid and uid != 0 and os.geteuid() != 0:
        suexec.limit_to_setid_capabilities()
        return
    if os.geteuid() != 0 or uid == 0:
        return
    try:
        name = pwd.getpwuid(uid).pw_name
        os.initgroups(name, gid)
    except (KeyError, OSError):
        os.setgroups([gid])
    os.setgid(gid)
    if keep_setid:
        suexec.keep_capabilities_across_setuid()
    os.setuid(uid)
    if os.geteuid() != uid or os.getegid() != gid:
        raise OSError("could not drop privileges to uid %d gid %d" % (uid, gid))
    if keep_setid:
        suexec.limit_to_setid_capabilities()


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
