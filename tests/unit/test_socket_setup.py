"""The ScriptSock's creation: permissions, stale and live sockets, path length."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from gunicorn_cgid.daemon.supervisor import SUN_PATH_MAX, SetupError, prepare_socket


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


def test_too_long_path_is_refused(tmp_path):
    path = str(tmp_path / ("x" * (SUN_PATH_MAX + 1)))
    with pytest.raises(SetupError, match="at most"):
        prepare_socket(path, os.geteuid(), os.getegid())
