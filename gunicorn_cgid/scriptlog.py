"""ScriptLog records (Apache's ScriptLog, ScriptLogBuffer, ScriptLogLength).

Formatting is pure; ``append`` writes one record with one ``write`` on an
``O_APPEND`` descriptor so that records of several workers never interleave.
Runs in the worker. Layout as mod_cgi's ``log_scripterror`` (short ``%error``
record) and ``log_script`` (full record).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable


def _stamp(now: float) -> str:
    return time.strftime("%a %b %d %H:%M:%S %Y", time.localtime(now))


def _first_lines(method: str, uri: str, query: str, protocol: str, status: int,
                 filename: str, now: float) -> list[str]:
    target = uri + ("?" + query if query else "")
    return ["%%%% [%s] %s %s %s" % (_stamp(now), method, target, protocol),
            "%%%% %d %s" % (status, filename)]


def format_error(method: str, uri: str, query: str, protocol: str, status: int,
                 filename: str, message: str, now: float) -> bytes:
    """The short record written for refusals (403, 404, exec failure, daemon unavailable)."""
    lines = _first_lines(method, uri, query, protocol, status, filename, now)
    lines += ["%error", message]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogateescape")


def format_full(method: str, uri: str, query: str, protocol: str, status: int, filename: str,
                request_headers: Iterable[tuple[str, str]], body: bytes,
                response_headers: Iterable[tuple[str, str]], last_line: str,
                stdout: bytes, stderr: bytes, now: float) -> bytes:
    """The full record written when the script's output could not be used (500, 502, 504)."""
    out = ["\n".join(_first_lines(method, uri, query, protocol, status, filename, now)).encode(
        "utf-8", "surrogateescape") + b"\n%request\n"]
    for name, value in request_headers:
        out.append(("%s: %s\n" % (name, value)).encode("latin-1", "replace"))
    if method in ("POST", "PUT") and body:
        out.append(b"\n" + body + b"\n")
    out.append(b"%response\n")
    for name, value in response_headers:
        out.append(("%s: %s\n" % (name, value)).encode("latin-1", "replace"))
    if last_line:
        out.append(last_line.encode("latin-1", "replace") + b"\n")
    if stdout:
        out.append(b"%stdout\n" + stdout + (b"" if stdout.endswith(b"\n") else b"\n"))
    if stderr:
        out.append(b"%stderr\n" + stderr + (b"" if stderr.endswith(b"\n") else b"\n"))
    return b"".join(out)


def append(path: str, max_length: int, record: bytes) -> bool:
    """Append one record unless the log is already over ``max_length`` bytes; False if skipped.

    ``-`` writes to stderr (for containers). As Apache, the size is checked
    before writing, so the last record may overshoot the limit.
    """
    if path == "-":
        try:
            os.write(2, record)
        except OSError:
            return False
        return True
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size > max_length:
            return False
        os.write(fd, record)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
