"""Processes of the servers under test: start and stop them, account their CPU
by role, sample their memory.

Everything here reads /proc and, where it can make one, a cgroup per server:

* CPU of long-lived processes (servers, workers, daemons) is the change of
  utime + stime in ``/proc/<pid>/stat`` between two snapshots.
* CPU of the scripts (processes born and gone during the measurement) is the
  cgroup's total minus the long-lived processes' share when the server runs
  in a cgroup of its own (cgroup v1 ``cpuacct`` or cgroup v2 ``cpu.stat``),
  else the change of cutime + cstime of the long-lived processes, which is
  what the processes they reaped used.
* Memory is the PSS of every process of the server's tree, from
  ``/proc/<pid>/smaps_rollup``, summed, sampled while the load runs.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT = 8.0
ROLES = ("server", "daemon", "scripts")


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
# the process table


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    session: int
    start: int  # clock ticks after boot: (pid, start) names one process
    zombie: bool
    cpu: int  # utime + stime, clock ticks
    child_cpu: int  # cutime + cstime: children this process has reaped
    threads: int


def read_proc(pid: int) -> Proc | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = raw[raw.rindex(")") + 2:].split()
    return Proc(pid=pid, ppid=int(f[1]), session=int(f[3]), start=int(f[19]), zombie=f[0] == "Z",
                cpu=int(f[11]) + int(f[12]), child_cpu=int(f[13]) + int(f[14]), threads=int(f[17]))


def process_table() -> dict[int, Proc]:
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            p = read_proc(int(name))
            if p is not None:
                table[p.pid] = p
    return table


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def tree(roots: list[int], table: dict[int, Proc]) -> dict[int, int]:
    """Every process under ``roots`` (descendants, and members of a root's
    session that were re-parented elsewhere), mapped to its root."""
    children: dict[int, list[int]] = {}
    for p in table.values():
        children.setdefault(p.ppid, []).append(p.pid)
    me = os.getpid()
    owner: dict[int, int] = {}
    for root in roots:
        if root in table:
            owner[root] = root
        frontier = [root]
        while frontier:
            for child in children.get(frontier.pop(), ()):
                if child not in owner and child != me:
                    owner[child] = root
                    frontier.append(child)
    for p in table.values():
        if p.session in roots and p.pid not in owner and p.pid != me:
            owner[p.pid] = p.session
    return owner


# --------------------------------------------------------------------------
# cgroups: one per server, for the CPU of the short-lived scripts


def _mounts() -> tuple[Path | None, Path | None]:
    """Mount points of the cgroup v1 hierarchy holding cpuacct, and of cgroup2."""
    v1 = v2 = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields, after = pre.split(), post.split()
        if len(fields) < 5 or len(after) < 3:
            continue
        if after[0] == "cgroup" and "cpuacct" in after[2].split(","):
            v1 = Path(fields[4])
        elif after[0] == "cgroup2" and v2 is None:
            v2 = Path(fields[4])
    return v1, v2


def _own_cgroup(v1: bool) -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        hier, controllers, path = line.split(":", 2)
        if (v1 and "cpuacct" in controllers.split(",")) or (not v1 and hier == "0"):
            return path.lstrip("/")
    raise OSError("not in a cgroup of that hierarchy")


class Cgroup:
    """One server's cgroup; its processes (and all they start) are counted."""

    def __init__(self, path: Path, v1: bool) -> None:
        self.path = path
        self.v1 = v1

    def usage_us(self) -> float:
        if self.v1:
            return int((self.path / "cpuacct.usage").read_text()) / 1e3
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return float(value)
        raise OSError("no usage_usec in cpu.stat")

    def pids(self) -> list[int]:
        """Processes in the cgroup and, in v2, in the cgroups a server made under it."""
        out = []
        for directory, _, files in os.walk(self.path):
            if "cgroup.procs" in files:
                try:
                    out += [int(x) for x in Path(directory, "cgroup.procs").read_text().split()]
                except OSError:
                    pass
        return out


class Cgroups:
    """The bench's cgroup directory, one child per server."""

    def __init__(self, base: Path, v1: bool) -> None:
        self.base = base
        self.v1 = v1
        self.children: list[Cgroup] = []

    @property
    def name(self) -> str:
        return "cgroup v1 cpuacct" if self.v1 else "cgroup v2 cpu.stat"

    @classmethod
    def create(cls) -> tuple[Cgroups | None, str]:
        """A fresh directory under the bench's own cgroup, or None and why not."""
        if os.geteuid() != 0:
            return None, "not root"
        v1, v2 = _mounts()
        why = "no cgroup mount"
        for mount, is_v1 in ((v1, True), (v2, False)):
            if mount is None:
                continue
            try:
                base = mount / _own_cgroup(is_v1) / f"gunicorn-cgid-bench.{os.getpid()}"
                base.mkdir()
            except OSError as exc:
                why = f"cannot make a cgroup under {mount}: {exc}"
                continue
            group = cls(base, is_v1)
            try:
                probe = group.child("probe")
                probe.usage_us()
                probe.path.rmdir()
                group.children.remove(probe)
            except OSError as exc:
                why = f"cgroup at {mount} not usable: {exc}"
                group.remove()
                continue
            return group, group.name
        return None, why

    def child(self, key: str) -> Cgroup:
        path = self.base / key
        path.mkdir()
        group = Cgroup(path, self.v1)
        self.children.append(group)
        return group

    def leftovers(self) -> list[int]:
        return [pid for group in self.children for pid in group.pids()]

    def remove(self) -> None:
        """Kill whatever is still in the cgroups, then remove them (deepest first)."""
        for _ in range(50):
            pids = self.leftovers()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        for directory, _, _ in sorted(os.walk(self.base), key=lambda t: -len(t[0])):
            try:
                os.rmdir(directory)
            except OSError:
                pass


# --------------------------------------------------------------------------
# starting and stopping


def _child_setup(cgroup_procs: str | None, ids: tuple[str, int, int] | None) -> None:
    """In the child before exec: enter the cgroup (while still root), then drop to the user."""
    if cgroup_procs is not None:
        with open(cgroup_procs, "w") as fh:
            fh.write(str(os.getpid()))
    if ids is not None:
        name, uid, gid = ids
        os.initgroups(name, gid)
        os.setgid(gid)
        os.setuid(uid)


STARTED: list[Managed] = []  # every process started, for cleanup


class Managed:
    """A child started in its own session; stop() ends it and all it spawned."""

    def __init__(self, name: str, argv: list[str], log: Path, cgroup: Cgroup | None = None,
                 run_as: tuple[str, int, int] | None = None, **kw) -> None:
        self.name = name
        self.log = log
        procs = str(cgroup.path / "cgroup.procs") if cgroup is not None else None
        setup = None
        if procs is not None or run_as is not None:
            def setup() -> None:
                _child_setup(procs, run_as)
        with open(log, "ab") as fh:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=setup, **kw,
            )
        self.pid = self.proc.pid
        self._related: dict[int, int] = {}
        STARTED.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _collect(self) -> None:
        table = process_table()
        for pid in tree([self.pid], table):
            self._related[pid] = table[pid].start

    def terminate(self) -> None:
        """SIGTERM to the session's process group; remember the whole tree first."""
        self._collect()
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def finish(self) -> None:
        """Wait for the exit, then SIGKILL anything of the tree still running
        (including children that moved to their own process group or session)."""
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        self._collect()
        for pid, start in self._related.items():
            p = read_proc(pid)
            if p is not None and p.start == start:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"warning: {self.name} (pid {self.pid}) did not exit", file=sys.stderr)

    def survivors(self) -> list[int]:
        """Processes of this tree still running (should be none after finish())."""
        out = []
        for pid, start in self._related.items():
            p = read_proc(pid)
            if p is not None and p.start == start and not p.zombie:
                out.append(pid)
        return out


def stop_all() -> list[str]:
    """Stop every process started; return a line per process that survived."""
    started = list(STARTED)
    STARTED.clear()
    for m in started:
        m.terminate()
    for m in started:
        m.finish()
    return [f"{m.name}: pid {pid} still running" for m in started for pid in m.survivors()]


# --------------------------------------------------------------------------
# CPU by role


@dataclass
class CpuSnapshot:
    at: float
    procs: dict[int, tuple[int, str, int, int]]  # pid -> (start, role, cpu, child_cpu) in ticks
    cgroup_us: float | None


def cpu_snapshot(roots: list[int], role_of: Callable[[Proc, int, dict[int, Proc]], str],
                 cgroup: Cgroup | None) -> CpuSnapshot:
    """``role_of(proc, root, table)`` names the role of a long-lived process."""
    cg = None
    if cgroup is not None:
        try:
            cg = cgroup.usage_us()
        except OSError:
            cg = None
    table = process_table()
    procs = {}
    for pid, root in tree(roots, table).items():
        p = table[pid]
        if not p.zombie:
            procs[pid] = (p.start, role_of(p, root, table), p.cpu, p.child_cpu)
    return CpuSnapshot(time.monotonic(), procs, cg)


def cpu_between(before: CpuSnapshot, after: CpuSnapshot) -> dict[str, float]:
    """Seconds of CPU per role. Processes alive at both snapshots are the
    server's own (their role as named); the rest are scripts."""
    used = dict.fromkeys(ROLES, 0.0)
    reaped = 0
    for pid, (start, role, cpu, child) in after.procs.items():
        b = before.procs.get(pid)
        if b is None or b[0] != start:
            continue
        used[role] += (cpu - b[2]) / CLK_TCK
        reaped += child - b[3]
    if before.cgroup_us is not None and after.cgroup_us is not None:
        total = (after.cgroup_us - before.cgroup_us) / 1e6
        used["scripts"] = max(0.0, total - used["server"] - used["daemon"])
    else:
        used["scripts"] = reaped / CLK_TCK
    return used


def machine_busy() -> float:
    """Seconds of CPU the whole machine has been busy since boot, steal included
    (time the hypervisor gave to other guests)."""
    with open("/proc/stat") as fh:
        f = fh.readline().split()
    # user nice system idle iowait irq softirq steal
    return sum(int(f[i]) for i in (1, 2, 3, 6, 7, 8)) / CLK_TCK


def own_cpu() -> float:
    """CPU seconds of this process and of its reaped children (wrk)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# --------------------------------------------------------------------------
# memory


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_pss_kib(roots: list[int]) -> int:
    table = process_table()
    return sum(pss_kib(pid) for pid in tree(roots, table) if not table[pid].zombie)


class PeakPss:
    """Samples the summed PSS of a process tree in a thread; .stop() returns the peak in MiB."""

    def __init__(self, roots: list[int], interval: float = 0.5) -> None:
        self.roots = roots
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, tree_pss_kib(self.roots))
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakPss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return self.peak / 1024
