"""Starting up: settings with the stock command and with gunicorn-cgid, privileges, bad setups."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gunicorn_cgid.daemon import spawn

from .conftest import CGI_BIN, Server, free_port, wait_until


def run_gunicorn(args: list[str], cwd: Path, env: dict[str, str] | None = None,
                 timeout: float = 20) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(args, cwd=str(cwd), env=full_env, capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)


def test_invalid_setting_stops_the_server(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from gunicorn_cgid.hooks import *\nbind = '127.0.0.1:%d'\n"
                    "control_socket_disable = True\ncgi_timeout = 'soon'\n" % free_port())
    result = run_gunicorn([sys.executable, "-m", "gunicorn", "-c", str(conf), "gunicorn_cgid:app"], tmp_path)
    assert result.returncode != 0
    assert "cgi_timeout" in result.stderr
    assert not list(tmp_path.glob("logs/cgisock*"))


def test_unwritable_socket_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from gunicorn_cgid.hooks import *\nbind = '127.0.0.1:%d'\ncontrol_socket_disable = True\n"
                    "cgi_allow_root = True\nscript_sock = %r\n" % (free_port(), str(shared / "cgisock")))
    result = run_gunicorn([sys.executable, "-m", "gunicorn", "-c", str(conf), "gunicorn_cgid:app"], tmp_path)
    assert result.returncode != 0
    assert "writable by other users" in result.stderr
    assert str(shared) in result.stderr


def test_script_log_beside_the_socket_is_refused(tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("from gunicorn_cgid.hooks import *\nbind = '127.0.0.1:%d'\ncontrol_socket_disable = True\n"
                    "cgi_allow_root = True\nscript_sock = 'logs/cgisock'\nscript_log = 'logs/cgi.log'\n"
                    % free_port())
    result = run_gunicorn([sys.executable, "-m", "gunicorn", "-c", str(conf), "gunicorn_cgid:app"], tmp_path)
    assert result.returncode != 0
    assert "are in the same directory %s" % (tmp_path / "logs") in result.stderr
    assert "move one of them" in result.stderr
    assert not (tmp_path / "logs" / "cgi.log").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the file to another user")
def test_script_log_file_is_the_workers_and_its_directory_is_not():
    root = Path(tempfile.mkdtemp(prefix="cgid-log-", dir="/tmp"))  # reachable by nobody
    try:
        os.chmod(root, 0o755)
        srv = Server(root, "gthread", {"user": "nobody", "group": "nogroup", "script_log": "logs/cgi.log"})
        srv.start()
        try:
            log_dir, log_file = root / "logs", root / "logs" / "cgi.log"
            assert (log_dir.stat().st_uid, stat.S_IMODE(log_dir.stat().st_mode)) == (0, 0o755)
            assert (log_file.stat().st_uid, log_file.stat().st_gid) == (65534, 65534)
            assert stat.S_IMODE(log_file.stat().st_mode) == 0o640
            assert srv.get("/cgi-bin/bogus.sh")[0] == 500  # a failed request: the workers write its record
            wait_until(lambda: b"bogus.sh" in log_file.read_bytes(), 5, what="the ScriptLog record")
        finally:
            srv.stop()
            srv.kill_everything()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make the symlink matter")
def test_script_log_never_follows_a_symlink_to_hand_a_file_over(tmp_path):
    from gunicorn_cgid.hooks import create_script_log
    target = tmp_path / "precious"
    target.write_text("root's\n")
    os.chmod(target, 0o600)
    (tmp_path / "cgi.log").symlink_to(target)
    with pytest.raises(OSError):
        create_script_log(str(tmp_path / "cgi.log"), 65534, 65534)
    assert target.stat().st_uid == 0 and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_gunicorn_cgid_command_takes_flags_and_env(tmp_path):
    port = free_port()
    sock_dir = tmp_path / "sockets"
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("bind = '127.0.0.1:%d'\ncontrol_socket_disable = True\nworker_class = 'gthread'\n"
                    "script_alias = {'/cgi-bin/': %r}\n" % (port, str(CGI_BIN) + "/"))
    # --cgi-allow-root as a flag: the command takes every CGI setting (the tests run as root).
    exe = shutil.which("gunicorn-cgid") or ""
    cmd = [exe] if exe else [sys.executable, "-m", "gunicorn_cgid.cli"]
    proc = subprocess.Popen(
        cmd + ["-c", str(conf), "--script-sock", str(sock_dir / "s"), "--cgi-allow-root", "true"],
        cwd=str(tmp_path), env=dict(os.environ, GUNICORN_CMD_ARGS="--cgi-env FROM_ENV=yes"),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    srv = Server(tmp_path, "gthread", {})
    srv.port = port
    srv.proc = proc
    try:
        wait_until(lambda: list(sock_dir.glob("s.*")), 20, what="the socket named by --script-sock")
        wait_until(srv.ready, 20, what="gunicorn-cgid to answer")
        status, _, body = srv.get("/cgi-bin/env.sh")
        assert status == 200
        assert b"FROM_ENV=yes" in body
    finally:
        srv.stop()
    assert not list(sock_dir.glob("s.*"))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_scripts_run_as_the_configured_user_without_root_groups():
    root = Path(tempfile.mkdtemp(prefix="cgid-priv-", dir="/tmp"))
    try:
        os.chmod(root, 0o755)
        bin_dir = root / "cgi-bin"
        bin_dir.mkdir()
        (bin_dir / "id.sh").write_text("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\n"
                                       "echo uid=$(id -u) gid=$(id -g) groups=$(id -G)\n")
        os.chmod(bin_dir / "id.sh", 0o755)
        srv = Server(root, "gthread", {"user": "nobody", "group": "nogroup",
                                       "script_alias": {"/cgi-bin/": str(bin_dir) + "/"}})
        srv.start()
        try:
            status, _, body = srv.get("/cgi-bin/id.sh")
            assert status == 200, srv.log()
            text = body.decode()
            assert "uid=65534 gid=65534" in text
            groups = text.split("groups=")[1].split()
            assert "0" not in groups
            sock = next((root / "run").glob("cgisock.*"))
            assert sock.stat().st_uid == 65534
            assert oct(sock.stat().st_mode & 0o777) == oct(0o600)
        finally:
            srv.stop()
            srv.kill_everything()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_app_without_hooks_answers_503(tmp_path):
    port = free_port()
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text("bind = '127.0.0.1:%d'\ncontrol_socket_disable = True\n" % port)
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(conf), "gunicorn_cgid:app"],
                            cwd=str(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    srv = Server(tmp_path, "sync", {})
    srv.port = port
    srv.proc = proc
    try:
        wait_until(srv.ready, 20, what="gunicorn to answer")
        assert srv.get("/cgi-bin/env.sh")[0] == 503
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
    assert "from gunicorn_cgid.hooks import *" in out


@pytest.mark.parametrize("spawn_path", ["c", "posix"])
def test_resource_limits_apply_to_scripts(serve, spawn_path, monkeypatch):
    if spawn_path == "c" and spawn._native is None:
        pytest.skip("the C spawn path is not built here")
    if spawn_path == "posix":  # a fork that sets them before the exec
        monkeypatch.setenv(spawn.ENV_SPAWN, "posix")
    srv = serve("gthread", cgi_rlimit_cpu=7, cgi_rlimit_mem=512 * 1024 * 1024, cgi_rlimit_nproc=300)
    status, _, body = srv.get("/cgi-bin/limits.sh")
    assert status == 200
    limits = {line[:26].strip(): line[26:].split()[:2] for line in body.decode().splitlines()[1:]}
    assert limits["Max cpu time"] == ["7", "7"]
    assert limits["Max address space"] == [str(512 * 1024 * 1024)] * 2
    assert limits["Max processes"] == ["300", "300"]


def test_cpu_limit_kills_a_spinning_script(serve):
    srv = serve("gthread", cgi_rlimit_cpu=1, cgi_timeout=20)
    status, _, _ = srv.get("/cgi-bin/spin.sh")
    assert status == 500  # killed by SIGXCPU before its headers
    wait_until(lambda: "spin.sh (pid" in srv.log() and "signal" in srv.log(), 10,
               what="the kill to be logged")
