"""The daemon's two spawn paths: what a script starts with, and how each failure is told.

Each test runs on the C path (skipped where it is not built) and on the
pure-Python fallback, unless it is about something only the C path does.
Scripts are real processes; every one is reaped before the test ends.
"""

from __future__ import annotations

import errno
import os
import resource
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_cgid import wire
from gunicorn_cgid.daemon import containment, spawn

NOBODY = 65534


def _read_all(fd: int) -> bytes:
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    os.close(fd)
    return data


def _zombies() -> list[int]:
    """Our children that exited and were not reaped."""
    me = str(os.getpid())
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path("/proc/%s/stat" % name).read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[1] == me and fields[0] == "Z":
                found.append(int(name))
    return found


def _req(argv: tuple[bytes, ...], cwd: bytes = b"/", env: tuple[bytes, ...] = (), **limits: int) -> wire.SpawnRequest:
    return wire.SpawnRequest(filename=argv[0], cwd=cwd, argv=argv, env=env, **limits)


def _run(req: wire.SpawnRequest, stdin: bytes = b"") -> tuple[bytes, bytes, int]:
    """Spawn ``req`` with pipes as its stdio; its stdout, stderr and exit status."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = spawn.spawn_script(req, [in_r, out_w, err_w])
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    os.write(in_w, stdin)
    os.close(in_w)
    out, err = _read_all(out_r), _read_all(err_r)
    _, status = os.waitpid(pid, 0)
    return out, err, os.waitstatus_to_exitcode(status)


@pytest.fixture
def no_zombies() -> Iterator[None]:
    yield
    assert _zombies() == []


def test_script_gets_its_argv_environment_cwd_and_stdio(spawn_path, tmp_path):
    script = b'echo "$0|$1|$FOO|$(pwd)"; cat; echo to-stderr >&2; exit 3'
    out, err, code = _run(_req((b"/bin/sh", b"-c", script, b"one"), cwd=os.fsencode(tmp_path),
                               env=(b"FOO=a b=c",)), stdin=b"body")
    assert out == b"one||a b=c|%s\nbody" % os.fsencode(tmp_path)  # sh -c: the first argument is $0
    assert (err, code) == (b"to-stderr\n", 3)


def test_script_starts_with_default_signals_none_blocked_in_a_session_of_its_own(spawn_path, no_zombies):
    caught = []
    old_usr1 = signal.signal(signal.SIGUSR1, lambda *_: caught.append(1))
    old_hup = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    try:
        out, _, code = _run(_req((b"/bin/sh", b"-c",
                                  b"echo sid=$(cut -d' ' -f6 /proc/$$/stat) pid=$$; "
                                  b"exec cat /proc/self/status")))
        mask_after = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        signal.signal(signal.SIGUSR1, old_usr1)
        signal.signal(signal.SIGHUP, old_hup)
    lines = dict(line.split(":\t") for line in out.decode().splitlines() if line.startswith(("SigBlk", "SigIgn",
                                                                                              "SigCgt")))
    # Standard signals only: glibc's posix_spawn leaves its own two (32, 33) ignored.
    assert {name: int(value, 16) & 0x7FFFFFFF for name, value in lines.items()} == {"SigBlk": 0, "SigIgn": 0,
                                                                                    "SigCgt": 0}
    sid, pid = (part.split("=")[1] for part in out.decode().splitlines()[0].split())
    assert sid == pid
    assert code == 0
    assert signal.SIGUSR2 in mask_after and signal.SIGUSR1 not in mask_after  # the daemon's own mask is back
    assert caught == []


def _executable(path: Path, text: bytes, mode: int = 0o755) -> bytes:
    path.write_bytes(text)
    path.chmod(mode)
    return os.fsencode(path)


@pytest.mark.parametrize("case", ["missing", "not executable", "bad format", "missing cwd"])
def test_each_failure_is_an_oserror_with_its_errno_and_leaves_no_child(spawn_path, case, tmp_path, no_zombies):
    filename, cwd, expected = b"/bin/true", b"/", 0
    if case == "missing":
        filename, expected = os.fsencode(tmp_path / "nope"), errno.ENOENT
    elif case == "not executable":
        filename, expected = _executable(tmp_path / "x.sh", b"#!/bin/sh\n", 0o644), errno.EACCES
    elif case == "bad format":
        filename, expected = _executable(tmp_path / "x.bin", b"\x7fELF garbage"), errno.ENOEXEC
    else:
        cwd, expected = os.fsencode(tmp_path / "gone"), errno.ENOENT
    null = os.open(os.devnull, os.O_RDWR)
    try:
        with pytest.raises(OSError) as info:
            spawn.spawn_script(_req((filename,), cwd=cwd), [null, null, null])
    finally:
        os.close(null)
    assert info.value.errno == expected
    assert info.value.strerror == os.strerror(expected)  # the worker's error line: "exec of 'x' failed: <this>"


def test_limits_that_cannot_be_set_are_named(spawn_path):
    """A hard limit the daemon cannot raise: the spawn fails and says it was the limits."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # lower our hard limit (and lose the right to raise it), then ask for more
        try:
            os.close(r)
            resource.setrlimit(resource.RLIMIT_CPU, (10, 10))
            if os.geteuid() == 0:
                spawn.drop_privileges(NOBODY, NOBODY)
            null = os.open(os.devnull, os.O_RDWR)
            try:
                spawn.spawn_script(_req((b"/bin/true",), rlimit_cpu=20), [null, null, null])
                os.write(w, b"started")
            except OSError as exc:
                os.write(w, b"%d %s" % (exc.errno or 0, str(exc).encode()))
        finally:
            os._exit(0)
    os.close(w)
    result = _read_all(r).decode()
    os.waitpid(pid, 0)
    assert result.startswith("%d " % errno.EPERM) and "cannot apply cgi_rlimit_* limits" in result, result


@pytest.fixture
def c_path() -> None:
    if spawn._native is None:
        pytest.skip("the C spawn path is not built here")


def test_stdio_descriptors_below_three_land_where_asked(c_path):
    """The daemon's 0-2 are taken, but a descriptor given as 1 for stderr must not be clobbered first."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(err_w, 1)
            os.dup2(out_w, 2)
            null = os.open(os.devnull, os.O_RDWR)
            child = spawn.spawn_script(_req((b"/bin/sh", b"-c", b"echo out; echo err >&2")), [null, 2, 1])
            os.waitpid(child, 0)
        finally:
            os._exit(0)
    os.close(out_w)
    os.close(err_w)
    assert (_read_all(out_r), _read_all(err_r)) == (b"out\n", b"err\n")
    os.waitpid(pid, 0)


def test_a_bad_stdio_descriptor_is_named(c_path, no_zombies):
    r, w = os.pipe()
    os.close(w)
    with pytest.raises(OSError) as info:
        spawn.spawn_script(_req((b"/bin/true",)), [r, w, w])
    os.close(r)
    assert info.value.errno == errno.EBADF
    assert "cannot give it its stdin, stdout and stderr" in str(info.value)


def test_a_cgroup_the_child_cannot_enter_is_a_cgroup_join_error(c_path, no_zombies):
    null = os.open(os.devnull, os.O_RDONLY)  # not writable: the child's write fails with EBADF
    try:
        with pytest.raises(spawn.CgroupJoinError) as info:
            spawn.spawn_script(_req((b"/bin/true",)), [null, null, null], cgroup_fd=null)
    finally:
        os.close(null)
    assert info.value.errno == errno.EBADF


def test_the_script_is_in_its_cgroup_from_its_first_instruction(c_path, tmp_path):
    ours, why = containment.find_cgroup2()
    if ours is None:
        pytest.skip("no cgroup v2 here: %s" % why)
    name = "spawn-test-%d" % os.getpid()
    cage = os.path.join(ours, name)
    try:
        os.mkdir(cage)
    except OSError as exc:
        pytest.skip("cannot create a cgroup under ours: %s" % exc.strerror)
    try:
        fd = os.open(os.path.join(cage, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
        r, w = os.pipe()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            # The program's very first read of its own cgroup: cat is exec'd straight.
            pid = spawn.spawn_script(_req((b"/bin/cat", b"/proc/self/cgroup")), [null, w, null], cgroup_fd=fd)
        finally:
            for each in (fd, w, null):
                os.close(each)
        out = _read_all(r).decode()
        os.waitpid(pid, 0)
        own = next(line[3:] for line in Path("/proc/self/cgroup").read_text().splitlines() if line.startswith("0::"))
        assert "0::%s/%s\n" % (own.rstrip("/"), name) in out, out
    finally:
        assert containment.cg_clear(cage)
