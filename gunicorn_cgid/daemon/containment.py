"""Containment: no process that a script starts outlives its request.

Runs in the supervisor and the daemon. A script runs in a process group of
its own, but any of its processes can leave it (``setsid``, a double fork),
and a group kill then misses them. Two modes, chosen when a daemon starts
and logged on one line:

* **cgroup v2** (``containment: cgroup v2 at ...``), where a cgroup can be
  delegated to us: cgroup2 mounted (``/sys/fs/cgroup`` or, in hybrid layouts,
  ``/sys/fs/cgroup/unified``), our own cgroup writable, and ``cgroup.kill``
  present (Linux 5.14). The supervisor makes ``gunicorn-cgid.<master pid>``
  under its own cgroup; each daemon gets ``d<pid>`` inside it, sits in its
  leaf ``d<pid>/daemon``, and puts every script in a cgroup of its own,
  ``d<pid>/s<n>``. Nothing can leave a cgroup without write access to an
  ancestor's ``cgroup.procs``, so ``cgroup.kill`` ends every process of the
  script, whatever sessions or parents it has. Once empty, the cgroup goes
  back to a pool of free ones for the next script (up to
  ``FREE_CGROUPS``; the rest are removed), which saves its mkdir and rmdir
  on every request.

  The script must be in its cgroup before it runs a single instruction, or
  it could fork out first. The C spawn path (``spawn.joins_cgroup()``) has
  the child write itself into its cgroup's ``cgroup.procs`` before its exec.
  Without it, ``posix_spawn`` cannot place the child, so the
  single-threaded daemon moves *itself* into the script's cgroup, spawns (a
  child starts in its parent's cgroup), and moves back: nothing else runs
  in the daemon meanwhile, and the script is born inside. Measured cost
  (Linux 6.18, 2 busy cores): 0.15 to 0.4 ms more per spawn (posix_spawn of
  /bin/true in a loop: 0.77-0.83 ms without a cgroup, 0.90-1.22 ms with the
  mkdir and two moves); ``cgroup.kill`` and ``rmdir`` 0.03-0.1 ms each; the
  daemon's CPU time per request went from 0.82-0.87 ms to 0.87-1.03 ms. A
  fork with a pre-exec step that enters the cgroup costs 2.4-4.4 ms.

* **process groups + subreaper sweep** (``containment: process groups +
  subreaper sweep``), elsewhere. The daemon is a child subreaper, so a
  process whose parent dies is re-parented to it. After each request ends
  and each reap, a child of the daemon that is not a script is a leftover
  unless a request still in progress may have started it (it was born
  after that request's script): a leftover is stopped, with its whole
  process tree, and killed. When the daemon stops, every process under it
  is killed. A process that escaped while its parent still runs is caught
  once that parent dies; a process re-parented above the daemon (to init
  in another PID namespace) is out of reach.

``GUNICORN_CGID_CONTAINMENT`` in the environment of gunicorn's master picks
the mode: ``auto`` (default: cgroup v2 where it can be delegated),
``pgroup`` (always the fallback), ``cgroup`` (refuse to start without it).
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from gunicorn_cgid.daemon import spawn

ENV_MODE = "GUNICORN_CGID_CONTAINMENT"
MODES = ("auto", "pgroup", "cgroup")
PGROUP_NAME = "process groups + subreaper sweep"
CLEAR_TIMEOUT_SECONDS = 1.0
FREE_CGROUPS = 64  # empty script cgroups kept for reuse
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ContainmentError(Exception):
    """The containment a mode promises cannot be set up; the message says why."""


class ContainmentBroken(Exception):
    """The daemon could not leave a script's cgroup: it must not go on serving from there."""


# -- processes -----------------------------------------------------------------

@dataclass(frozen=True)
class ProcInfo:
    state: str
    ppid: int
    pgrp: int
    session: int
    born_by: float  # CLOCK_BOOTTIME seconds by which it had started (its start tick, rounded up)


def proc_info(pid: int) -> ProcInfo | None:
    """What /proc says of ``pid``, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return ProcInfo(fields[0].decode(), int(fields[1]), int(fields[2]), int(fields[3]),
                        (int(fields[19]) + 1) / _CLK_TCK)
    except (OSError, IndexError, ValueError):
        return None


def boottime() -> float:
    """Now, on the clock that /proc's start times use."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (every thread's)."""
    out: list[int] = []
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return out
    try:
        for tid in tids:
            with open("/proc/%d/task/%s/children" % (pid, tid), "rb") as f:
                out.extend(int(p) for p in f.read().split())
        return out
    except FileNotFoundError:
        pass  # the thread ended, or a kernel without CONFIG_PROC_CHILDREN: ask every process
    except OSError:
        return out
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = proc_info(int(entry))
            if info is not None and info.ppid == pid:
                out.append(int(entry))
    return out


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def kill_trees(roots: list[int], sig: int = signal.SIGKILL) -> list[int]:
    """Stop each process tree top-down, so that nothing forks while it is walked, then signal it.

    Walks again until no new child shows up (a fork under way when its
    parent was stopped). Returns the pids signalled.
    """
    stopped: list[int] = []
    seen: set[int] = set()
    frontier = list(roots)
    while frontier:
        batch, frontier = frontier, []
        for pid in batch:
            if pid in seen:
                continue
            seen.add(pid)
            if _signal(pid, signal.SIGSTOP):
                stopped.append(pid)
        for pid in stopped:
            frontier.extend(child for child in children(pid) if child not in seen)
    for pid in stopped:
        _signal(pid, sig)
        if sig != signal.SIGKILL:
            _signal(pid, signal.SIGCONT)
    return stopped


# -- cgroup v2 files -------------------------------------------------------------

def find_cgroup2() -> tuple[str | None, str]:
    """The directory of our own cgroup v2, or None and why there is none."""
    own = None
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                if line.startswith("0::"):
                    own = line[3:].strip()
    except OSError as exc:
        return None, "cannot read /proc/self/cgroup: %s" % exc.strerror
    if own is None:
        return None, "no cgroup v2 hierarchy (cgroup v1 only)"
    mounts: list[tuple[str, str]] = []
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    parts = left.split()
                    mounts.append((_unescape(parts[3]), _unescape(parts[4])))  # (root, mount point)
    except OSError as exc:
        return None, "cannot read /proc/self/mountinfo: %s" % exc.strerror
    if not mounts:
        return None, "cgroup2 is not mounted"
    for root, point in mounts:
        if own == root or own.startswith(root.rstrip("/") + "/"):
            rel = own[len(root.rstrip("/")):].lstrip("/")
            path = os.path.join(point, rel) if rel else point
            if os.path.isdir(path):
                return path, ""
    return None, "our cgroup %s is not visible under the cgroup2 mount %s" % (own, mounts[0][1])


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def cg_kill(path: str) -> bool:
    """SIGKILL every process in the cgroup and below; False if it is gone."""
    try:
        _write(os.path.join(path, "cgroup.kill"), b"1")
    except OSError:
        return False
    return True


def cg_populated(path: str) -> bool:
    """True while a live process is in the cgroup or below.

    Read with os.open/os.read: checked after every reap, and a buffered
    ``open()`` costs three times the system calls.
    """
    try:
        fd = os.open(path + "/cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return b"populated 1" in os.read(fd, 4096)
    except OSError:
        return False
    finally:
        os.close(fd)


def cg_procs(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs"), "rb") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def cg_remove(path: str) -> bool:
    """rmdir the cgroup and the ones below it, deepest first; True when none is left."""
    try:
        entries = os.listdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    for name in entries:
        sub = os.path.join(path, name)
        if os.path.isdir(sub) and not os.path.islink(sub):
            cg_remove(sub)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def cg_clear(path: str, timeout: float = CLEAR_TIMEOUT_SECONDS) -> bool:
    """Kill everything in the cgroup, wait until it is empty, remove it; True when removed."""
    if not os.path.isdir(path):
        return True
    cg_kill(path)
    deadline = time.monotonic() + timeout
    while not cg_remove(path):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)
    return True


# -- the supervisor's part -------------------------------------------------------

def mode_from_env() -> str:
    mode = os.environ.get(ENV_MODE, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ContainmentError("%s=%r: expected one of %s" % (ENV_MODE, mode, ", ".join(MODES)))
    return mode


def prepare_root(master_pid: int, mode: str) -> tuple[str | None, str]:
    """In the supervisor: the cgroup under which each daemon gets its own, or None and why not.

    A cgroup left by an earlier supervisor of the same master (killed
    before it could clean up) is emptied and reused. Raises
    ContainmentError in ``cgroup`` mode when there is no usable cgroup.
    """
    if mode == "pgroup":
        return None, "%s=pgroup" % ENV_MODE
    where, why = find_cgroup2()
    root = None
    if where is not None:
        root = os.path.join(where, "gunicorn-cgid.%d" % master_pid)
        try:
            if os.path.isdir(root):
                _clear_children(root)
            else:
                os.mkdir(root, 0o755)
            if not os.path.exists(os.path.join(root, "cgroup.kill")):
                cg_remove(root)
                root, why = None, "%s has no cgroup.kill (Linux 5.14 or later needed)" % where
        except OSError as exc:
            root, why = None, "cgroup v2 at %s is not writable: %s" % (where, exc.strerror)
    if root is None and mode == "cgroup":
        raise ContainmentError("%s=cgroup but %s" % (ENV_MODE, why))
    return root, why


def _clear_children(root: str) -> None:
    cg_kill(root)
    for name in os.listdir(root):
        sub = os.path.join(root, name)
        if os.path.isdir(sub):
            cg_clear(sub)


def daemon_cgroup(root: str, daemon_pid: int) -> str:
    return os.path.join(root, "d%d" % daemon_pid)


# -- the daemon's part -----------------------------------------------------------

class ProcessGroups:
    """Scripts in process groups of their own; what leaves its group is found by the sweep."""

    name = PGROUP_NAME
    sweeps = True  # the daemon must look for leftovers among its children

    def spawn(self, start: Callable[[int], int]) -> tuple[int, str | None]:
        """Start a script with ``start(cgroup_fd)``; returns its pid and its cage (None here).

        ``cgroup_fd``: the ``cgroup.procs`` the child writes itself into
        before its exec (``spawn.joins_cgroup()``), or -1.
        """
        return start(-1), None

    # ``pid`` is the script's process group; 0 when that number can no
    # longer be trusted to be the script's (see Daemon._group_of).

    def term(self, pid: int, cage: str | None) -> bool:
        """SIGTERM the script's processes; False if none is left."""
        return pid > 1 and spawn.signal_group(pid, signal.SIGTERM)

    def kill(self, pid: int, cage: str | None) -> None:
        if pid > 1:
            spawn.signal_group(pid, signal.SIGKILL)

    def alive(self, pid: int, cage: str | None) -> bool:
        return pid > 1 and spawn.group_alive(pid)

    def release(self, cage: str | None, empty: bool = False) -> bool:
        """Free what the script's containment holds once it is empty; False: try again later.

        ``empty``: the caller has just found it empty (``alive``), so it is not read again.
        """
        return True

    def finish(self) -> None:
        """When the daemon stops, after its scripts: free what is left."""


class Cgroups(ProcessGroups):
    """One cgroup per script, ended with cgroup.kill (see the module docstring)."""

    sweeps = False

    def __init__(self, directory: str, home_fd: int) -> None:
        self.dir = directory
        self.home_fd = home_fd  # our leaf's cgroup.procs, opened once
        self.seq = 0
        self.name = "cgroup v2 at %s" % directory
        self.cages: set[str] = set()   # in use
        self.free: list[str] = []      # empty, ready for the next script

    def spawn(self, start: Callable[[int], int]) -> tuple[int, str | None]:
        if self.free:
            cage = self.free.pop()
        else:
            self.seq += 1
            cage = "%s/s%d" % (self.dir, self.seq)
            try:
                os.mkdir(cage)
            except OSError as exc:
                raise ContainmentError("cannot create its cgroup %s: %s" % (cage, exc.strerror)) from None
        try:
            pid = self._start_in(cage, start)
        except BaseException:
            _rmdir(cage)
            raise
        self.cages.add(cage)
        return pid, cage

    def _start_in(self, cage: str, start: Callable[[int], int]) -> int:
        """The script born in ``cage``: it joins by itself (C path), or the daemon goes there to spawn it."""
        procs = cage + "/cgroup.procs"
        if spawn.joins_cgroup():
            try:
                fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise _cannot_enter(cage, exc) from None
            try:
                return start(fd)
            except spawn.CgroupJoinError as exc:
                raise _cannot_enter(cage, exc) from None
            finally:
                os.close(fd)
        try:
            _write(procs, b"0")
        except OSError as exc:
            raise _cannot_enter(cage, exc) from None
        try:
            return start(-1)
        finally:
            self._go_home()

    def _go_home(self) -> None:
        try:
            os.write(self.home_fd, b"0")
        except OSError as exc:
            raise ContainmentBroken("cannot leave a script's cgroup: %s" % exc.strerror) from None

    def term(self, pid: int, cage: str | None) -> bool:
        found = pid > 1 and spawn.signal_group(pid, signal.SIGTERM)
        for member in cg_procs(cage) if cage else ():
            if _signal(member, signal.SIGTERM):
                _signal(member, signal.SIGCONT)
                found = True
        return found

    def kill(self, pid: int, cage: str | None) -> None:
        if cage:
            cg_kill(cage)

    def alive(self, pid: int, cage: str | None) -> bool:
        return cg_populated(cage) if cage else False

    def release(self, cage: str | None, empty: bool = False) -> bool:
        if not cage:
            return True
        if len(self.free) < FREE_CGROUPS:
            if not empty and cg_populated(cage):
                return False  # a process is still dying
            self.cages.discard(cage)
            self.free.append(cage)
            return True
        try:
            os.rmdir(cage)
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return False  # a process is still dying
            raise
        self.cages.discard(cage)
        return True

    def finish(self) -> None:
        for cage in self.free:
            _rmdir(cage)
        self.free.clear()
        for cage in list(self.cages):
            if cg_clear(cage):
                self.cages.discard(cage)


def _cannot_enter(cage: str, exc: OSError) -> ContainmentError:
    return ContainmentError("cannot enter its cgroup %s: %s" % (cage, exc.strerror))


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def for_daemon(root: str | None, why: str, uid: int, gid: int, required: bool = False) -> ProcessGroups:
    """In a new daemon, still root: its own cgroup, delegated to the workers' user.

    The user gets the directory and its ``cgroup.procs``, ``cgroup.threads``
    and ``cgroup.subtree_control`` (the kernel's delegation rule: moving a
    process needs write access to the common ancestor's ``cgroup.procs``),
    so that after dropping privileges the daemon can still create a cgroup
    per script and move itself between its leaf and them. Falls back to
    process groups if any of this fails (``required``: raises
    ContainmentError instead).
    """
    if root is None:
        if required:
            raise ContainmentError(why)
        return _fallback(why)
    directory = daemon_cgroup(root, os.getpid())
    leaf = os.path.join(directory, "daemon")
    try:
        os.mkdir(directory, 0o755)
        os.mkdir(leaf, 0o755)
        if os.geteuid() == 0 and uid != 0:
            for path in (directory, leaf):
                os.chown(path, uid, gid)
            for name in ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"):
                os.chown(os.path.join(directory, name), uid, gid)
            os.chown(os.path.join(leaf, "cgroup.procs"), uid, gid)
        home_fd = os.open(os.path.join(leaf, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        os.write(home_fd, b"0")
    except OSError as exc:
        cg_remove(directory)
        why = "cannot set up the cgroup %s: %s" % (directory, exc.strerror)
        if required:
            raise ContainmentError(why) from None
        return _fallback(why)
    return Cgroups(directory, home_fd)


def _fallback(why: str) -> ProcessGroups:
    groups = ProcessGroups()
    groups.name = "%s (%s)" % (PGROUP_NAME, why) if why else PGROUP_NAME
    return groups
