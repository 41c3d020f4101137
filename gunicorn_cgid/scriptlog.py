"""ScriptLog records (Apache's ScriptLog, ScriptLogBuffer, ScriptLogLength).

Formatting is pure; ``append`` writes one record with one ``write`` on an
``O_APPEND`` descriptor so that records of several workers never interleave.
Runs in the worker. Layout as mod_cgi's ``log_scripterror`` (short ``%error``
record) and ``log_script`` (full record), byte for byte:

* the date is ``apr_ctime``: local time, English names whatever the locale,
  day of the month zero-padded (``Wed Jun 05 10:53:21 1996``);
* ``%stdout`` holds what the script printed after the offending line as one
  chunk, and like every chunk in Apache it is followed by ``\\n``, even when it
  already ends with one; ``%stderr`` is likewise followed by ``\\n``.

Deliberate differences: every one-line field (method, URI, query, protocol,
file name, message, header names and values, the script's offending line) is
escaped as Apache escapes its error log (``logsafe.escape``: control
characters, ``\\`` and non-ASCII bytes as ``\\n``, ``\\xhh``...), where
mod_cgi writes them raw: a ``%0a`` in a URL or a newline in a stderr line
cannot forge a record, and no input can make one fail to encode. The body,
``%stdout`` and ``%stderr`` are multi-line data, not fields, and stay raw as
in Apache; a body is written whole, NUL bytes included (Apache prints it as a C
string, so it stops at the first NUL); a request line with an empty query
(``/x?``) is logged without the ``?``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

from gunicorn_cgid import logsafe

FILE_MODE = 0o644  # Apache: 0666 & ~umask; here never writable by group or others

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # time.struct_time.tm_wday order
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def ctime(now: float) -> str:
    """``apr_ctime``: ``Wed Jun 05 10:53:21 1996`` in local time, independent of the locale."""
    t = time.localtime(now)
    return "%s %s %02d %02d:%02d:%02d %d" % (
        _DAYS[t.tm_wday], _MONTHS[t.tm_mon - 1], t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, t.tm_year)


def _native(text: str | bytes) -> bytes:
    """A path, file name or message (undecodable bytes kept as surrogates), escaped for one line."""
    return logsafe.escape(text).encode("ascii")


def _wire(text: str | bytes) -> bytes:
    """A WSGI string (one char per byte: method, query, headers), escaped for one line."""
    return logsafe.escape(text, wsgi=True).encode("ascii")


def _head(method: str, uri: str, query: str, protocol: str, status: int, filename: str,
          now: float) -> bytes:
    """``%% [date] METHOD uri?args PROTOCOL`` and ``%% STATUS filename``."""
    target = _native(uri) + (b"?" + _wire(query) if query else b"")
    return b"".join([
        b"%% [", ctime(now).encode("ascii"), b"] ", _wire(method), b" ", target, b" ", _wire(protocol), b"\n",
        b"%% ", b"%d" % status, b" ", _native(filename), b"\n"])


def format_error(method: str, uri: str, query: str, protocol: str, status: int,
                 filename: str, message: str | bytes, now: float) -> bytes:
    """The short record: refusals (403, 404, exec failure, daemon unavailable) and each stderr line.

    ``uri`` and ``filename`` are native strings (undecodable bytes as
    surrogates), ``query`` a WSGI string; ``message`` may be a stderr line's
    raw bytes.
    """
    return _head(method, uri, query, protocol, status, filename, now) + b"%error\n" + _native(message) + b"\n"


def format_full(method: str, uri: str, query: str, protocol: str, status: int, filename: str,
                request_headers: Iterable[tuple[str, str]], body: bytes,
                response_headers: Iterable[tuple[str, str]], last_line: str | bytes,
                stdout: bytes, stderr: bytes, now: float) -> bytes:
    """The full record written when the script's output could not be used (500, 502, 504).

    ``body`` is the start of the request body (already cut at
    ``script_log_buffer``), shown for POST and PUT only; ``last_line`` the
    last header line read (the offending one); ``stdout`` what followed it;
    ``stderr`` the script's stderr not logged otherwise.
    """
    out = [_head(method, uri, query, protocol, status, filename, now), b"%request\n"]
    for name, value in request_headers:
        out.append(_wire(name) + b": " + _wire(value) + b"\n")
    if method in ("POST", "PUT") and body:
        out.append(b"\n" + body + b"\n")
    out.append(b"%response\n")
    for name, value in response_headers:
        out.append(_wire(name) + b": " + _wire(value) + b"\n")
    if last_line:
        out.append(_wire(last_line) + b"\n")
    if stdout:
        out.append(b"%stdout\n" + stdout + b"\n")
    if stderr:
        out.append(b"%stderr\n" + stderr + b"\n")
    return b"".join(out)


def append(path: str, max_length: int, record: bytes) -> bool:
    """Append one record unless the log is already over ``max_length`` bytes; False if skipped.

    ``-`` writes to stderr (for containers), with no size limit. As Apache,
    the size is checked before writing, so the last record may overshoot
    the limit; a log that cannot be opened is skipped silently.
    """
    if path == "-":
        return _write_all(2, record)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size > max_length:
            return False
        return _write_all(fd, record)
    finally:
        os.close(fd)


def _write_all(fd: int, record: bytes) -> bool:
    """One ``write`` for the record; more only if the kernel took part of it (disk full, signal)."""
    view = memoryview(record)
    try:
        while view:
            written = os.write(fd, view)
            if written <= 0:
                return False
            view = view[written:]
    except OSError:
        return False
    return True
