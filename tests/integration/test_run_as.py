"""Scripts run as their location's own user (suEXEC), with the workers as nobody.

A location with ``user`` runs its scripts as that account: they cannot
signal, ptrace or read the workers or the daemon, nor connect to the
ScriptSock; a script that fails a suEXEC check is refused with its check
named in the error log. Needs root (to start gunicorn as root and to create
a system account for the test, removed afterwards).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_cgid.daemon import spawn

from .conftest import CGI_BIN, Server

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: gunicorn must start as root to run scripts as"
                       " other users, and the test creates a system account"),
    pytest.mark.skipif(shutil.which("useradd") is None or shutil.which("userdel") is None,
                       reason="needs useradd and userdel (the passwd package) to create the test account"),
]


@pytest.fixture(scope="module")
def account() -> Iterator[pwd.struct_passwd]:
    """A system account with a group of its own, ids in the system range (>= suexec's minimum)."""
    name = "cgi-test-%s" % secrets.token_hex(3)
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        try:
            grp.getgrnam(name)
            subprocess.run(["groupdel", name], capture_output=True)
        except KeyError:
            pass


@pytest.fixture
def site(account: pwd.struct_passwd) -> Iterator[Path]:
    """/tmp/cgid-runas-*/ (readable by nobody) with u/ (the account's scripts) and w/ (root's)."""
    root = Path(tempfile.mkdtemp(prefix="cgid-runas-", dir="/tmp"))
    os.chmod(root, 0o755)
    ids = (account.pw_uid, account.pw_gid)
    mine = root / "u"
    mine.mkdir()
    os.chown(mine, *ids)
    for name in ("runas-id.sh", "runas-probe.py"):
        shutil.copy(CGI_BIN / name, mine / name)
        os.chown(mine / name, *ids)
        os.chmod(mine / name, 0o755)
    shutil.copy(CGI_BIN / "runas-id.sh", mine / "loose.sh")
    os.chown(mine / "loose.sh", *ids)
    os.chmod(mine / "loose.sh", 0o775)  # group-writable: suEXEC refuses it
    shutil.copy(CGI_BIN / "runas-id.sh", mine / "roots.sh")
    os.chmod(mine / "roots.sh", 0o755)  # owned by root, not the account: refused
    theirs = root / "w"
    theirs.mkdir()
    for name in ("runas-id.sh", "runas-probe.py"):
        shutil.copy(CGI_BIN / name, theirs / name)
        os.chmod(theirs / name, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server(site: Path, account: pwd.struct_passwd) -> Iterator[Server]:
    with _server(site, account) as srv:
        yield srv


@contextlib.contextmanager
def _server(site: Path, account: pwd.struct_passwd) -> Iterator[Server]:
    srv = Server(site, "gthread", {
        "user": "nobody", "group": "nogroup",
        "script_alias": {"/u/": {"path": str(site / "u") + "/", "user": account.pw_name},
                         "/w/": str(site / "w") + "/"},
    })
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        srv.kill_everything()


def _probe(srv: Server, prefix: str, pids: list[int], sock: str) -> dict[tuple[str, str], str]:
    query = urllib.parse.urlencode([("pid", p) for p in pids] + [("sock", sock)])
    status, _, body = srv.get("%srunas-probe.py?%s" % (prefix, query))
    assert status == 200, srv.log()
    results = {}
    for line in body.decode().splitlines():
        what, target, result = line.split(" ", 2) if line.count(" ") >= 2 else (*line.split(" "), "")
        results[(what, target)] = result
    return results


def _status(pid: int) -> dict[str, str]:
    with open("/proc/%d/status" % pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_the_daemon_keeps_only_what_run_as_needs(server):
    status = _status(server.daemon_pid())
    assert status["Uid"].split() == ["65534"] * 4
    # CAP_KILL, CAP_SETGID, CAP_SETUID and nothing else; none to pass on.
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0xE0
    assert int(status["CapInh"], 16) == int(status["CapAmb"], 16) == 0


def test_without_a_user_the_daemon_keeps_nothing(site):
    root = Path(tempfile.mkdtemp(prefix="cgid-plain-", dir="/tmp"))
    os.chmod(root, 0o755)
    plain = Server(root, "gthread", {"user": "nobody", "group": "nogroup",
                                     "script_alias": {"/w/": str(site / "w") + "/"}})
    try:
        plain.start()
        status = _status(plain.daemon_pid())
        assert status["Uid"].split() == ["65534"] * 4
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
        assert plain.get("/w/runas-id.sh")[0] == 200
    finally:
        plain.stop()
        plain.kill_everything()
        shutil.rmtree(root, ignore_errors=True)


def test_script_runs_as_its_locations_user(server, account):
    status, _, body = server.get("/u/runas-id.sh")
    assert status == 200, server.log()
    text = body.decode()
    assert "uid=%d gid=%d" % (account.pw_uid, account.pw_gid) in text
    assert "0" not in text.split("groups=")[1].split()
    # A location without a user still runs as the workers' user.
    status, _, body = server.get("/w/runas-id.sh")
    assert status == 200
    assert "uid=65534" in body.decode()


def test_script_runs_as_its_locations_user_on_the_posix_spawn_path(site, account, monkeypatch):
    """Without the C spawn path, such a script is forked and takes its ids in the child, before its exec."""
    monkeypatch.setenv(spawn.ENV_SPAWN, "posix")
    with _server(site, account) as srv:
        assert "spawn: posix_spawn" in srv.errorlog.read_text()
        status, _, body = srv.get("/u/runas-id.sh")
        assert status == 200, srv.log()
        assert "uid=%d gid=%d" % (account.pw_uid, account.pw_gid) in body.decode()


def test_script_cannot_reach_the_workers_the_daemon_or_the_scriptsock(server, account):
    workers = server.worker_pids()
    daemon = server.daemon_pid()
    sock = str(next((server.root / "run").glob("cgisock.*")))
    pids = workers + [daemon]

    # Control: a script of the workers' own user can signal them and connect.
    same = _probe(server, "/w/", pids, sock)
    assert same[("uid", "65534")] == ""
    assert all(same[("kill", str(w))] == "ok" for w in workers), same
    assert same[("connect", sock)] == "ok"

    other = _probe(server, "/u/", pids, sock)
    assert other[("uid", str(account.pw_uid))] == ""
    for pid in pids:
        assert other[("kill", str(pid))] == "EPERM", other
        assert other[("ptrace", str(pid))] == "EPERM", other
        assert other[("environ", str(pid))] == "EACCES", other
    assert other[("connect", sock)] == "EACCES", other
    for pid in workers:
        assert os.path.exists("/proc/%d" % pid)  # the workers are still there


@pytest.mark.parametrize("script, check", [
    ("loose.sh", "file is writable by others: ("),
    ("roots.sh", "mismatch with directory ("),
])
def test_a_script_failing_a_check_is_refused_and_logged(server, script, check):
    status, _, _ = server.get("/u/" + script)
    assert status == 403, server.log()
    lines = [line for line in server.log().splitlines() if check in line]
    assert lines and script in lines[0], server.log()
