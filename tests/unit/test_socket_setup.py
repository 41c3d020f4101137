"""The ScriptSock's creation: permissions, its directory and those above, stale and live sockets, path length."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from gunicorn_cgid.daemon.supervisor import SUN_PATH_MAX, SetupError, check_socket_directory, prepare_socket

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the checks above the directory apply to a root master")
NOBODY = 65534


def test_socket_is_owner_only_and_listening(tmp_path):
    path = str(tmp_path / "run" / "cgisock.1")
    sock = prepare_socket(path, os.geteuid(), os.getegid())
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        client = socket.socket(socket.AF_UNIX)
        client.connect(path)
        client.close()
    finally:
        sock.close()


def test_stale_socket_file_is_replaced(tmp_path):
    path = str(tmp_path / "cgisock.1")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # the file stays, nobody listens: stale
    with pytest.raises(ConnectionRefusedError):
        with socket.socket(socket.AF_UNIX) as probe:
            probe.connect(path)
    sock = prepare_socket(path, os.geteuid(), os.getegid())
    try:
        # The path now leads to the returned listener: a client connecting
        # there is accepted by it and can talk to it.
        assert sock.getsockname() == path
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        sock.settimeout(5)
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(5)
            client.connect(path)
            peer, _ = sock.accept()
            with peer:
                client.sendall(b"ping")
                assert peer.recv(4) == b"ping"
                peer.sendall(b"pong")
                assert client.recv(4) == b"pong"
    finally:
        sock.close()


def test_live_socket_of_another_instance_is_refused(tmp_path):
    path = str(tmp_path / "cgisock.1")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen(1)
    try:
        with pytest.raises(SetupError, match="in use by another running instance"):
            prepare_socket(path, os.geteuid(), os.getegid())
    finally:
        live.close()


def test_directory_writable_by_others_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    with pytest.raises(SetupError, match="writable by other users") as info:
        prepare_socket(str(shared / "cgisock.1"), os.geteuid(), os.getegid())
    assert str(shared) in str(info.value)


def test_group_writable_directory_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o770)
    with pytest.raises(SetupError, match="writable by other users"):
        prepare_socket(str(shared / "cgisock.1"), os.geteuid(), os.getegid())


def test_missing_directories_are_created_0755_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        sock = prepare_socket(str(tmp_path / "a" / "b" / "cgisock.1"), os.geteuid(), os.getegid())
        sock.close()
    finally:
        os.umask(old)
    for d in (tmp_path / "a", tmp_path / "a" / "b"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o755
        assert d.stat().st_uid == os.geteuid()


@as_root
def test_directory_of_another_user_is_refused_with_the_fix(tmp_path):
    # Issue #9: the directory had been chowned to the workers' user.
    theirs = tmp_path / "logs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(SetupError, match="belongs to nobody") as info:
        prepare_socket(str(theirs / "cgisock.1"), NOBODY, NOBODY)
    assert "chown 0 %s" % theirs in str(info.value)
    assert not (theirs / "cgisock.1").exists()


@as_root
def test_sticky_world_writable_parent_with_an_own_subdirectory_is_safe(tmp_path):
    # The recipes' layout: run/ is an emptyDir (1777), the socket is in run/cgid/.
    run = tmp_path / "run"
    run.mkdir()
    os.chmod(run, 0o1777)
    sock = prepare_socket(str(run / "cgid" / "cgisock.1"), NOBODY, NOBODY)
    sock.close()
    assert stat.S_IMODE((run / "cgid").stat().st_mode) == 0o755
    # The same run/ holding the socket itself is refused: anyone may create files beside it.
    with pytest.raises(SetupError, match="writable by other users"):
        prepare_socket(str(run / "cgisock.1"), NOBODY, NOBODY)


@as_root
def test_above_the_directory_no_plain_world_writable_nor_workers_directory(tmp_path):
    open_dir = tmp_path / "open"
    (open_dir / "run").mkdir(parents=True)
    os.chmod(open_dir, 0o777)  # not sticky: anyone can move run/ away and put their own
    with pytest.raises(SetupError, match="above the script_sock directory .* not sticky"):
        check_socket_directory(str(open_dir / "run"), NOBODY)
    workers = tmp_path / "workers"
    (workers / "run").mkdir(parents=True)
    os.chown(workers, NOBODY, NOBODY)  # the workers' scripts can rename run/
    with pytest.raises(SetupError, match="belongs to the workers' user nobody"):
        check_socket_directory(str(workers / "run"), NOBODY)
    check_socket_directory(str(workers / "run"), 1000)  # someone else's home: fine


@as_root
def test_a_symlinked_directory_is_checked_where_it_leads(tmp_path):
    real = tmp_path / "open" / "real"
    real.mkdir(parents=True)
    os.chmod(tmp_path / "open", 0o777)
    (tmp_path / "run").symlink_to(real)
    with pytest.raises(SetupError, match="not sticky"):
        check_socket_directory(str(tmp_path / "run"), NOBODY)


def test_too_long_path_is_refused(tmp_path):
    path = str(tmp_path / ("x" * (SUN_PATH_MAX + 1)))
    with pytest.raises(SetupError, match="at most"):
        prepare_socket(path, os.geteuid(), os.getegid())
