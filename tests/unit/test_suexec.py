"""suEXEC's checks on real files, account resolution, the cleaned environment, the daemon's capabilities.

The checks and privilege tests need root (to chown files to test ids and to
drop privileges in forked children); the ids used need no account.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import resource
import signal
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from gunicorn_cgid import wire
from gunicorn_cgid.daemon import spawn, suexec
from gunicorn_cgid.daemon.suexec import Refusal, RunAs

UID = GID = 4242
USER = RunAs(uid=UID, gid=GID, groups=(GID,), name="cgi-test")
NOBODY = 65534

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown test files and change ids")


def _account(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pytest.skip("no %r account here" % name)


# -- resolve -------------------------------------------------------------------------

def test_resolve_by_name_number_and_numeric_string():
    pw = _account("nobody")
    run_as = suexec.resolve("nobody", None)
    assert run_as == suexec.resolve(pw.pw_uid, None) == suexec.resolve(str(pw.pw_uid), None)
    assert (run_as.uid, run_as.gid, run_as.name) == (pw.pw_uid, pw.pw_gid, "nobody")
    assert run_as.groups[0] == pw.pw_gid


def test_resolve_explicit_group():
    _account("nobody")
    try:
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        pytest.skip("no nogroup group")
    assert suexec.resolve("nobody", "nogroup").gid == gid
    assert suexec.resolve("nobody", 4242).gid == 4242
    assert suexec.resolve("nobody", 4242).groups[0] == 4242


def test_resolve_refuses_root_and_low_uids():
    with pytest.raises(ValueError, match=r"cannot run as forbidden uid \(0/root\)"):
        suexec.resolve("root", None)
    with pytest.raises(ValueError, match="forbidden uid"):
        suexec.resolve(0, None)
    daemon = _account("daemon")
    assert daemon.pw_uid < suexec.UID_MIN
    with pytest.raises(ValueError, match=r"cannot run as forbidden uid \(%d/daemon\).*below %d"
                       % (daemon.pw_uid, suexec.UID_MIN)):
        suexec.resolve("daemon", None)


def test_resolve_refuses_group_zero_and_low_gids():
    _account("nobody")
    with pytest.raises(ValueError, match=r"cannot run as forbidden gid \(0/nobody\)"):
        suexec.resolve("nobody", "root")
    with pytest.raises(ValueError, match=r"forbidden gid \(5/nobody\)"):
        suexec.resolve("nobody", 5)


def test_resolve_unknown_accounts():
    with pytest.raises(ValueError, match=r"invalid target user name: \(no-such-user-xyz\)"):
        suexec.resolve("no-such-user-xyz", None)
    with pytest.raises(ValueError, match="invalid target user name"):
        suexec.resolve(3999999, None)
    _account("nobody")
    with pytest.raises(ValueError, match=r"invalid target group name: \(no-such-group-xyz\)"):
        suexec.resolve("nobody", "no-such-group-xyz")


# -- check ---------------------------------------------------------------------------

SCRIPT = b"#!/bin/sh\necho ok\n"


def _file(path: Path, mode: int = 0o755, owner: tuple[int, int] = (UID, GID), text: bytes = SCRIPT) -> Path:
    path.write_bytes(text)
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


def _dir(path: Path, mode: int = 0o755, owner: tuple[int, int] = (UID, GID)) -> Path:
    path.mkdir()
    os.chown(path, *owner)
    os.chmod(path, mode)
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """tmp/cgi (the location's root, the user's) with ok.sh (the user's script)."""
    os.chmod(tmp_path, 0o755)
    root = _dir(tmp_path / "cgi")
    _file(root / "ok.sh")
    return root


def refused(root: Path, script: Path | str, run_as: RunAs = USER) -> Refusal:
    with pytest.raises(Refusal) as info:
        suexec.check(run_as, os.fsencode(script), os.fsencode(root))
    return info.value


def passes(root: Path, script: Path | str, run_as: RunAs = USER) -> None:
    suexec.check(run_as, os.fsencode(script), os.fsencode(root))


@needs_root
def test_a_good_script_passes(site):
    passes(site, site / "ok.sh")
    sub = _dir(site / "sub")
    _file(sub / "deep.sh", 0o700)
    passes(site, sub / "deep.sh")


@needs_root
def test_refusal_carries_status_and_one_line_message(site):
    os.chmod(site / "ok.sh", 0o775)
    err = refused(site, site / "ok.sh")
    assert err.status == 403
    assert str(err) == err.message == "file is writable by others: (%s)" % (site / "ok.sh")
    assert "\n" not in err.message


@needs_root
@pytest.mark.parametrize("mode", [0o775, 0o757, 0o777])
def test_script_writable_by_group_or_others(site, mode):
    os.chmod(site / "ok.sh", mode)
    err = refused(site, site / "ok.sh")
    assert (err.status, err.message) == (403, "file is writable by others: (%s)" % (site / "ok.sh"))


@needs_root
@pytest.mark.parametrize("mode", [0o775, 0o757, 0o1777])
def test_directory_writable_by_group_or_others(site, mode):
    os.chmod(site, mode)
    err = refused(site, site / "ok.sh")
    assert (err.status, err.message) == (403, "directory is writable by others: (%s)" % site)


@needs_root
def test_writable_directory_between_root_and_script(site):
    sub = _dir(site / "sub", 0o777)
    _file(sub / "x.sh")
    err = refused(site, sub / "x.sh")
    assert (err.status, err.message) == (403, "directory is writable by others: (%s)" % sub)


@needs_root
@pytest.mark.parametrize("bit", [stat.S_ISUID, stat.S_ISGID])
def test_setuid_and_setgid_scripts(site, bit):
    os.chmod(site / "ok.sh", 0o755 | bit)
    err = refused(site, site / "ok.sh")
    assert (err.status, err.message) == (403, "file is either setuid or setgid: (%s)" % (site / "ok.sh"))


@needs_root
def test_script_of_another_owner(site):
    os.chown(site / "ok.sh", UID + 1, GID)
    err = refused(site, site / "ok.sh")
    assert err.status == 403
    assert err.message == ("target uid/gid (4242/4242) mismatch with directory (4242/4242) or program (4243/4242)"
                           ": (%s)" % (site / "ok.sh"))


@needs_root
def test_script_of_another_group(site):
    os.chown(site / "ok.sh", UID, GID + 1)
    err = refused(site, site / "ok.sh")
    assert "or program (4242/4243): (" in err.message


@needs_root
def test_directory_of_another_owner(site):
    os.chown(site, 0, 0)
    err = refused(site, site / "ok.sh")
    assert (err.status, err.message) == (
        403, "target uid/gid (4242/4242) mismatch with directory (0/0) or program (4242/4242): (%s)" % (site / "ok.sh"))


@needs_root
def test_root_directory_of_another_owner_above_a_subdirectory(site):
    os.chown(site, 0, 0)
    sub = _dir(site / "sub")
    _file(sub / "x.sh")
    assert "mismatch with directory (0/0)" in refused(site, sub / "x.sh").message


@needs_root
def test_not_executable(site):
    os.chmod(site / "ok.sh", 0o644)
    err = refused(site, site / "ok.sh")
    assert (err.status, err.message) == (403, "file has no execute permission: (%s)" % (site / "ok.sh"))


@needs_root
def test_not_a_regular_file(site):
    _dir(site / "d.sh")
    err = refused(site, site / "d.sh")
    assert (err.status, err.message) == (403, "program is not a regular file: (%s)" % (site / "d.sh"))


@needs_root
def test_file_capabilities(site):
    cap_net_raw = 13
    try:  # VFS_CAP_REVISION_2 with the effective flag: what setcap cap_net_raw+ep writes
        os.setxattr(site / "ok.sh", "security.capability", struct.pack("<5I", 0x02000001, 1 << cap_net_raw, 0, 0, 0))
    except OSError as exc:
        pytest.skip("cannot set file capabilities here: %s" % exc)
    err = refused(site, site / "ok.sh")
    assert (err.status, err.message) == (403, "file has capabilities: (%s)" % (site / "ok.sh"))


@needs_root
def test_symlink_to_a_file_outside_the_root(site, tmp_path):
    outside = _file(tmp_path / "outside.sh")  # the user's own, good in every other way
    os.symlink(outside, site / "link.sh")
    err = refused(site, site / "link.sh")
    assert (err.status, err.message) == (
        403, "command not in docroot (%s; docroot %s)" % (outside, site))
    os.symlink("/bin/true", site / "true")
    assert "command not in docroot (/" in refused(site, site / "true").message


@needs_root
def test_symlinked_directory_outside_the_root(site, tmp_path):
    elsewhere = _dir(tmp_path / "elsewhere")
    _file(elsewhere / "x.sh")
    os.symlink(elsewhere, site / "sub")
    err = refused(site, site / "sub" / "x.sh")
    assert (err.status, err.message) == (
        403, "command not in docroot (%s; docroot %s)" % (elsewhere / "x.sh", site))


@needs_root
def test_symlink_inside_the_root_is_checked_on_its_target(site):
    os.symlink("ok.sh", site / "alias.sh")
    passes(site, site / "alias.sh")
    _file(site / "bad.sh", 0o777)
    os.symlink("bad.sh", site / "bad-alias.sh")
    err = refused(site, site / "bad-alias.sh")
    assert err.message == "file is writable by others: (%s)" % (site / "bad.sh")


@needs_root
def test_symlink_inside_the_root_from_a_writable_directory(site):
    # Anyone could point the link elsewhere between the check and the exec.
    loose = _dir(site / "loose", 0o777)
    os.symlink("../ok.sh", loose / "x.sh")
    err = refused(site, loose / "x.sh")
    assert err.message == "directory is writable by others: (%s)" % loose


@needs_root
def test_dot_dot_in_the_path(site, tmp_path):
    err = refused(site, str(site) + "/../cgi/ok.sh")
    assert (err.status, err.message) == (403, "invalid command (%s/../cgi/ok.sh)" % site)


@needs_root
def test_script_outside_the_root_by_name(site, tmp_path):
    other = _dir(tmp_path / "other")
    _file(other / "x.sh")
    err = refused(site, other / "x.sh")
    assert (err.status, err.message) == (403, "command not in docroot (%s; docroot %s)" % (other / "x.sh", site))


@needs_root
def test_missing_relative_or_unreadable_root(site, tmp_path):
    assert refused(tmp_path / "nope", tmp_path / "nope" / "x.sh").status == 500
    assert "cannot get docroot information" in refused(tmp_path / "nope", tmp_path / "nope" / "x.sh").message
    with pytest.raises(Refusal) as info:
        suexec.check(USER, b"cgi/ok.sh", b"cgi")
    assert info.value.status == 500


@needs_root
def test_missing_script(site):
    err = refused(site, site / "gone.sh")
    assert (err.status, err.message) == (500, "cannot stat program: (%s)" % (site / "gone.sh"))


@needs_root
@pytest.mark.parametrize("uid", [0, 1, 33, suexec.UID_MIN - 1])
def test_uid_below_the_minimum(site, uid):
    err = refused(site, site / "ok.sh", RunAs(uid, GID, (GID,), "x"))
    assert (err.status, err.message) == (500, "cannot run as forbidden uid (%d/%s)" % (uid, site / "ok.sh"))


@needs_root
@pytest.mark.parametrize("gid, groups", [(0, (0,)), (suexec.GID_MIN - 1, (suexec.GID_MIN - 1,)), (GID, (GID, 0))])
def test_gid_below_the_minimum_or_group_zero(site, gid, groups):
    err = refused(site, site / "ok.sh", RunAs(UID, gid, groups, "x"))
    assert err.status == 500
    assert err.message.startswith("cannot run as forbidden gid (%d/" % (0 if 0 in groups else gid))


@needs_root
def test_minimum_ids_themselves_are_allowed(tmp_path):
    os.chmod(tmp_path, 0o755)
    owner = (suexec.UID_MIN, suexec.GID_MIN)
    root = _dir(tmp_path / "cgi", owner=owner)
    _file(root / "x.sh", owner=owner)
    passes(root, root / "x.sh", RunAs(suexec.UID_MIN, suexec.GID_MIN, (suexec.GID_MIN,), "x"))


@needs_root
def test_file_alias(site, tmp_path):
    passes(site / "ok.sh", site / "ok.sh")
    _file(site / "other.sh")
    err = refused(site / "ok.sh", site / "other.sh")
    assert err.message.startswith("command not in docroot")
    # The file's own directory must be the user's too.
    os.chown(site, 0, 0)
    assert "mismatch with directory (0/0)" in refused(site / "ok.sh", site / "ok.sh").message


@needs_root
def test_file_alias_through_a_symlink_outside(site, tmp_path):
    outside = _dir(tmp_path / "outside")
    _file(outside / "x.sh")
    os.symlink(outside / "x.sh", site / "alias")
    passes(site / "alias", site / "alias")  # the alias names the file: its real file is the root
    os.chown(outside, 0, 0)
    assert "mismatch with directory (0/0)" in refused(site / "alias", site / "alias").message


@needs_root
def test_control_characters_in_names_are_escaped(site):
    bad = _file(site / "a\nb\x1b.sh", 0o777)
    message = refused(site, bad).message
    assert "\n" not in message and "\x1b" not in message
    assert "a\\nb\\x1b.sh" in message


@needs_root
def test_check_costs_microseconds(site):
    sub = _dir(site / "sub")
    _file(sub / "x.sh")
    filename, root = os.fsencode(sub / "x.sh"), os.fsencode(site)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        suexec.check(USER, filename, root)
    per_call = (time.perf_counter() - start) / n
    print("suexec.check: %.1f us per call" % (per_call * 1e6))
    assert per_call < 0.002


# -- the environment -----------------------------------------------------------------

def test_clean_env_keeps_cgi_variables_and_drops_the_rest():
    env = {b"REQUEST_METHOD": b"GET", b"SCRIPT_NAME": b"/x", b"HTTP_HOST": b"h", b"SSL_PROTOCOL": b"TLSv1.3",
           b"LD_PRELOAD": b"/tmp/evil.so", b"PATH": b"/tmp/evil", b"PYTHONPATH": b"/tmp", b"BASH_ENV": b"/tmp/x",
           b"HTTP_EVIL": b"() { :; }; touch /tmp/pwned", b"GIT_PROJECT_ROOT": b"/srv/git"}
    out = suexec.clean_env(env)
    assert out == {b"REQUEST_METHOD": b"GET", b"SCRIPT_NAME": b"/x", b"HTTP_HOST": b"h",
                   b"SSL_PROTOCOL": b"TLSv1.3", b"PATH": suexec.SAFE_PATH}
    kept = suexec.clean_env(env, keep={b"GIT_PROJECT_ROOT", b"PATH"})
    assert kept[b"GIT_PROJECT_ROOT"] == b"/srv/git"
    assert kept[b"PATH"] == b"/tmp/evil"
    assert b"LD_PRELOAD" not in kept


# -- the daemon's privileges and the scripts it starts -------------------------------------

def _in_child(fn: Callable[[], bytes]) -> bytes:
    """Run ``fn`` in a forked child (which may drop privileges); its bytes, or the error it raised."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            out = fn()
        except BaseException as exc:  # the child must never return into pytest
            out = b"ERROR %r" % exc
        os.write(w, out)
        os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return data


def _status(pid: int | str) -> dict[str, str]:
    with open("/proc/%s/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


@needs_root
def test_daemon_keeps_only_setuid_setgid_kill_and_is_not_dumpable():
    def child() -> bytes:
        spawn.drop_privileges(NOBODY, NOBODY, keep_setid=True)
        st = _status("self")
        return repr((st["Uid"].split(), st["Gid"].split(), st["CapEff"], st["CapPrm"], st["CapInh"],
                     st["CapAmb"], suexec.dumpable(), os.getgroups())).encode()

    uids, gids, eff, prm, inh, amb, dumpable, groups = eval(_in_child(child))
    assert uids == [str(NOBODY)] * 4 and gids == [str(NOBODY)] * 4
    assert int(eff, 16) == int(prm, 16) == (1 << 5) | (1 << 6) | (1 << 7)  # CAP_KILL, CAP_SETGID, CAP_SETUID
    assert int(inh, 16) == 0 and int(amb, 16) == 0
    assert dumpable == 0
    assert 0 not in groups


@needs_root
def test_daemon_can_give_the_capabilities_up_later():
    def child() -> bytes:
        spawn.drop_privileges(NOBODY, NOBODY, keep_setid=True)
        suexec.drop_setid_capabilities()
        return repr(suexec.capabilities()).encode()

    assert eval(_in_child(child)) == (0, 0, 0)


@needs_root
def test_daemon_without_run_as_drops_everything():
    def child() -> bytes:
        spawn.drop_privileges(NOBODY, NOBODY)
        st = _status("self")
        return repr((st["CapEff"], st["CapPrm"])).encode()

    assert [int(x, 16) for x in eval(_in_child(child))] == [0, 0]


@needs_root
def test_a_daemon_that_is_not_root_needs_the_capabilities_given():
    def child() -> bytes:
        spawn.drop_privileges(NOBODY, NOBODY)
        try:
            spawn.drop_privileges(NOBODY, NOBODY, keep_setid=True)
        except OSError as exc:
            return str(exc).encode()
        return b"no error"

    out = _in_child(child)
    assert b"CAP_KILL, CAP_SETGID, CAP_SETUID" in out and b"start gunicorn as root" in out


_libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH, PTRACE_DETACH = 16, 17


def _sleeper(setup: Callable[[], None]) -> int:
    """A child that runs ``setup`` (dropping privileges), then sleeps until killed."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            setup()
            os.write(w, b"ok")
        finally:
            os.close(w)
        time.sleep(60)
        os._exit(0)
    os.close(w)
    ready = os.read(r, 2)
    os.close(r)
    assert ready == b"ok"
    return pid


def _probe(target: int, uid: int) -> dict[str, str]:
    """From a process of ``uid`` with no capabilities: ptrace, /proc/<pid>/environ, kill -0 of ``target``."""
    def child() -> bytes:
        spawn.drop_privileges(uid, uid)
        out = {}
        if _libc.ptrace(PTRACE_ATTACH, target, None, None) == 0:
            os.waitpid(target, 0)
            _libc.ptrace(PTRACE_DETACH, target, None, None)
            out["ptrace"] = "ok"
        else:
            out["ptrace"] = os.strerror(ctypes.get_errno())
        try:
            with open("/proc/%d/environ" % target, "rb") as f:
                f.read()
            out["environ"] = "ok"
        except OSError as exc:
            out["environ"] = exc.strerror
        try:
            os.kill(target, 0)
            out["kill"] = "ok"
        except OSError as exc:
            out["kill"] = exc.strerror
        return repr(out).encode()

    return eval(_in_child(child))


DENIED = "Operation not permitted"


@needs_root
def test_workers_uid_cannot_ptrace_or_read_a_daemon_that_keeps_capabilities():
    def control() -> None:  # the same uid without capabilities, made dumpable: the probe can succeed
        spawn.drop_privileges(NOBODY, NOBODY)
        suexec._prctl(suexec.PR_SET_DUMPABLE, 1)

    def capable_but_dumpable() -> None:  # the capability rule alone refuses ptrace
        spawn.drop_privileges(NOBODY, NOBODY, keep_setid=True)
        suexec._prctl(suexec.PR_SET_DUMPABLE, 1)

    def daemon() -> None:
        spawn.drop_privileges(NOBODY, NOBODY, keep_setid=True)

    pids = [_sleeper(f) for f in (control, capable_but_dumpable, daemon)]
    try:
        assert _probe(pids[0], NOBODY) == {"ptrace": "ok", "environ": "ok", "kill": "ok"}
        assert _probe(pids[1], NOBODY)["ptrace"] == DENIED
        # The workers' uid may still signal the daemon (as before), nothing more.
        assert _probe(pids[2], NOBODY) == {"ptrace": DENIED, "environ": "Permission denied", "kill": "ok"}
        # A script's user can do nothing to it.
        assert _probe(pids[2], UID) == {"ptrace": DENIED, "environ": "Permission denied", "kill": DENIED}
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


def _run_script(argv: tuple[bytes, ...], run_as: RunAs | None, env: tuple[bytes, ...] = (),
                keep_setid: bool = True, **limits: int) -> bytes:
    """In a child dropped as the daemon drops: spawn_script ``argv``; what it printed and its exit status."""
    def child() -> bytes:
        spawn.drop_privileges(NOBODY, NOBODY, keep_setid=keep_setid)
        r, w = os.pipe()
        null = os.open(os.devnull, os.O_RDONLY)
        req = wire.SpawnRequest(filename=argv[0], cwd=b"/", argv=argv, env=env, **limits)
        pid = spawn.spawn_script(req, [null, w, w], run_as, env_keep={b"KEEP_ME"})
        os.close(w)
        out = b""
        while chunk := os.read(r, 65536):
            out += chunk
        _, status = os.waitpid(pid, 0)
        return out + b"exit=%d" % os.waitstatus_to_exitcode(status)

    return _in_child(child)


SHOW = (b"/bin/sh", b"-c", b"echo ids=$(id -u) $(id -g) groups=$(id -G); grep ^Cap /proc/self/status; "
        b"grep ^Uid /proc/self/status; env; ulimit -t")


@needs_root
def test_script_runs_as_its_user_with_no_capabilities_and_a_clean_environment(spawn_path):
    run_as = RunAs(UID, GID, (GID, 5001), "cgi-test")
    out = _run_script(SHOW, run_as, env=(b"LD_PRELOAD=/tmp/evil.so", b"HTTP_HOST=h", b"KEEP_ME=1"))
    text = out.decode()
    assert "ids=4242 4242 groups=4242 5001" in text
    caps = dict(line.split(":\t") for line in text.splitlines() if line.startswith("Cap"))
    assert {int(v, 16) for k, v in caps.items() if k != "CapBnd"} == {0}
    assert text.split("Uid:\t")[1].split("\n")[0].split() == ["4242"] * 4
    assert "LD_PRELOAD" not in text and "HTTP_HOST=h" in text and "KEEP_ME=1" in text
    assert "PATH=/usr/local/bin:/usr/bin:/bin" in text
    assert text.endswith("exit=0")


@needs_root
def test_script_as_its_user_with_limits(spawn_path):
    out = _run_script(SHOW, RunAs(UID, GID, (GID,), "cgi-test"), rlimit_cpu=7).decode()
    assert "ids=4242 4242" in out
    assert out.endswith("7\nexit=0")
    assert resource.getrlimit(resource.RLIMIT_CPU)[0] != 7  # the daemon's own limits are untouched


@needs_root
def test_without_run_as_scripts_run_as_the_daemon(spawn_path):
    out = _run_script(SHOW, None, env=(b"LD_PRELOAD=", b"KEEP_ME=1"), keep_setid=False).decode()
    assert "ids=65534 65534" in out
    assert "LD_PRELOAD=" in out  # nothing is cleaned for the workers' own scripts


@needs_root
def test_spawn_refuses_root_even_if_asked(spawn_path):
    out = _run_script(SHOW, RunAs(0, 0, (0,), "root"))
    assert out.startswith(b"ERROR PermissionError") and b"uid/gid 0" in out
