#!/usr/bin/env python3
# Tries to reach other processes and the ScriptSock (test_run_as): for each
# pid= in the query, kill -0, ptrace attach and reading /proc/<pid>/environ;
# for each sock=, a connect. Prints one line per attempt: "what target result",
# the result being "ok" or the errno's name.
import ctypes
import errno
import os
import socket
import urllib.parse

PTRACE_ATTACH, PTRACE_DETACH = 16, 17
libc = ctypes.CDLL(None, use_errno=True)


def attempt(fn):
    try:
        fn()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"


def ptrace(pid):
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    os.waitpid(pid, 0)
    libc.ptrace(PTRACE_DETACH, pid, None, None)


def read_environ(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        f.read()


def connect(path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)


query = urllib.parse.parse_qs(os.environ.get("QUERY_STRING", ""))
lines = ["uid %d" % os.getuid()]
for pid in map(int, query.get("pid", [])):
    lines.append("kill %d %s" % (pid, attempt(lambda: os.kill(pid, 0))))
    lines.append("ptrace %d %s" % (pid, attempt(lambda: ptrace(pid))))
    lines.append("environ %d %s" % (pid, attempt(lambda: read_environ(pid))))
for path in query.get("sock", []):
    lines.append("connect %s %s" % (path, attempt(lambda: connect(path))))
os.write(1, b"Content-Type: text/plain\r\n\r\n" + "\n".join(lines).encode() + b"\n")
