"""The ScriptSock wire format: frames between a worker and the CGI daemon.

Pure encoding and a push decoder (no sockets), shared by the worker and the
daemon. A connection carries one script at a time::

    worker -> daemon   SPAWN  (+ SCM_RIGHTS: the script's stdin, stdout, stderr)
    daemon -> worker   STARTED pid  |  FAILED code errno message
    worker -> daemon   KILL reason               (optional)
    daemon -> worker   EXITED status, times, rusage
    worker -> daemon   DONE                      (optional: the request is over)

After DONE the connection waits for the worker's next SPAWN, so a worker
keeps a few connections open instead of connecting for every request (the
daemon's peer check runs once per connection). Closing the connection ends
the request too. After FAILED the daemon closes the connection.

Every frame is a 5-byte header and a payload::

    +---------------------------+--------+------------------+
    | payload length (u32, BE)  | kind   | payload ...      |
    +---------------------------+--------+------------------+

A SPAWN payload is five u32 (magic, max_runtime_ms, master_pid, the number
of arguments, the number of environment entries) and then every string,
each ended by a NUL: filename, cwd, location, the arguments, the
environment (``NAME=value``). A string cannot hold a NUL, as in exec.

Unlike mod_cgid's GETPID round trip, the pid comes back in-band on the same
connection, so a pid can never be matched to the wrong request.

A SPAWN names the script's location (its ``script_alias`` prefix) instead of
carrying limits: the daemon holds the policy (``daemon/policy.py``), and a
worker may only ask for a shorter ``max_runtime``.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

HEADER = struct.Struct(">IB")
MAGIC = 0x43474933  # "CGI3": a stray client, or a worker or daemon of another version, is refused at once

SPAWN = ord("S")
KILL = ord("K")
DONE = ord("D")    # the request is over: what the script left is ended, the connection takes the next SPAWN
STARTED = ord("P")
FAILED = ord("F")
EXITED = ord("X")
PING = ord("?")    # a worker asks whether the daemon answers (the health endpoint)
PONG = ord("!")    # the daemon answers, with its pid

#: The environment of one request is bounded by gunicorn's header limits
#: (100 fields of 8 KiB by default); 4 MiB leaves room for raised limits.
MAX_REQUEST_FRAME_BYTES = 4 * 1024 * 1024
MAX_REPLY_FRAME_BYTES = 64 * 1024
MAX_ARGS = 4096
SPAWN_FDS = 3  # stdin, stdout, stderr

# FAILED codes
FAIL_EXEC = 1      # exec failed: errno says why (ENOENT interpreter, EACCES, ENOEXEC)
FAIL_BUSY = 2      # cgi_max_scripts reached and the queue wait ran out
FAIL_REQUEST = 3   # the daemon refused the request frame
FAIL_SHUTDOWN = 4  # the daemon is stopping
FAIL_REFUSED = 5   # a check before exec refused the script (suEXEC): errno carries the HTTP status
FAIL_RETRY = 6     # not started, and safe to send again on a new connection (a kept one, as the daemon stops)

# EXITED / KILL reasons
REASON_NONE = 0         # the script exited by itself
REASON_KILLED = 1       # the worker asked (idle timeout, client gone...)
REASON_MAX_RUNTIME = 2  # cgi_max_runtime passed
REASON_SHUTDOWN = 3     # the daemon stopped while it ran
REASON_DISCONNECT = 4   # the worker's connection closed while it ran

_SPAWN_FIXED = struct.Struct(">IIIII")  # magic, max_runtime_ms, master_pid, argc, envc
_STARTED = struct.Struct(">I")
_FAILED = struct.Struct(">Bi")
_EXITED = struct.Struct(">iQQQQB")
_KILL = struct.Struct(">B")


class WireError(ValueError):
    """A frame that breaks the format; the connection that sent it is dropped."""


@dataclass(frozen=True, slots=True)
class SpawnRequest:
    """One script to exec, and the location whose policy the daemon applies to it.

    The limits are the daemon's: ``location`` (the ``script_alias`` prefix,
    "" for the document root) selects them, and ``max_runtime_ms`` can only
    shorten the location's ``max_runtime``. The ``rlimit_*`` fields are
    never on the wire: the daemon fills them from its policy before the
    spawn, so a peer cannot choose them.
    """
    filename: bytes
    cwd: bytes
    argv: tuple[bytes, ...]
    env: tuple[bytes, ...]  # b"NAME=value"
    location: str = ""
    max_runtime_ms: int = 0   # 0: the policy's; else at most the policy's
    master_pid: int = 0
    rlimit_cpu: int = -1      # daemon side only; -1: unset
    rlimit_mem: int = -1
    rlimit_nproc: int = -1


@dataclass(frozen=True, slots=True)
class Exited:
    """How a script ended: raw wait status plus its resource use."""
    wait_status: int
    wall_us: int
    utime_us: int
    stime_us: int
    maxrss_kb: int
    reason: int = REASON_NONE


@dataclass(frozen=True, slots=True)
class Failed:
    code: int
    errno: int
    message: str


@dataclass(frozen=True, slots=True)
class Frame:
    kind: int
    payload: bytes


def frame(kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), kind) + payload


_U32_MAX = 0xFFFFFFFF


def _u32(value: int) -> int:
    # Settings have no upper bound: a timeout of 50 days (4.3e9 ms) is
    # "practically never", not a reason to fail every request.
    return min(max(int(value), 0), _U32_MAX)


def encode_spawn(req: SpawnRequest) -> bytes:
    """The SPAWN frame; numbers past their field's range are clamped to it.

    The strings go as one NUL-terminated run (exec's own form), so building
    the frame is one join and reading it one split. Raises WireError for a
    string that holds a NUL, which exec could not carry either.
    """
    strings = [req.filename, req.cwd, req.location.encode("utf-8", "surrogateescape"), *req.argv, *req.env]
    text = b"\0".join(strings) + b"\0"
    if text.count(0) != len(strings):
        raise WireError("NUL byte in a string")
    fixed = _SPAWN_FIXED.pack(MAGIC, _u32(req.max_runtime_ms), _u32(req.master_pid), len(req.argv), len(req.env))
    return HEADER.pack(len(fixed) + len(text), SPAWN) + fixed + text


_EQUALS = itertools.repeat(b"=")  # endless: one b"=" for each entry map() checks


def decode_spawn(payload: bytes) -> SpawnRequest:
    if len(payload) < _SPAWN_FIXED.size:
        raise WireError("truncated payload")
    magic, max_runtime_ms, master_pid, argc, envc = _SPAWN_FIXED.unpack_from(payload)
    if magic != MAGIC:
        raise WireError("bad magic %#x" % magic)
    if argc > MAX_ARGS or envc > MAX_ARGS:
        raise WireError("too many strings: %d arguments, %d environment entries" % (argc, envc))
    if not argc:
        raise WireError("empty argv")
    text = payload[_SPAWN_FIXED.size:]
    if not text.endswith(b"\0"):
        raise WireError("truncated payload: the strings do not end with NUL")
    strings = text[:-1].split(b"\0")
    if len(strings) != 3 + argc + envc:
        raise WireError("%d strings where filename, cwd, location, %d arguments and %d environment entries"
                        " make %d (a NUL byte in a string, or trailing bytes?)"
                        % (len(strings), argc, envc, 3 + argc + envc))
    filename, cwd, location = strings[0], strings[1], strings[2]
    if not filename.startswith(b"/") or not cwd.startswith(b"/"):
        raise WireError("filename and cwd must be absolute")
    env = strings[3 + argc:]
    if not all(map(bytes.__contains__, env, _EQUALS)):
        raise WireError("environment entry without '='")
    return SpawnRequest(filename, cwd, tuple(strings[3:3 + argc]), tuple(env),
                        location.decode("utf-8", "surrogateescape"), max_runtime_ms, master_pid)


class _Reader:
    """Bounds-checked cursor over a payload."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise WireError("truncated payload")
        chunk = self.data[self.pos:end]
        self.pos = end
        return chunk

    def unpack(self, st: struct.Struct) -> tuple:
        return st.unpack(self.take(st.size))

    def end(self) -> None:
        if self.pos != len(self.data):
            raise WireError("%d trailing bytes" % (len(self.data) - self.pos))


def encode_started(pid: int) -> bytes:
    return frame(STARTED, _STARTED.pack(pid))


def decode_started(payload: bytes) -> int:
    r = _Reader(payload)
    (pid,) = r.unpack(_STARTED)
    r.end()
    return pid


def encode_failed(code: int, errno: int, message: str) -> bytes:
    text = message.encode("utf-8", "replace")[:MAX_REPLY_FRAME_BYTES - 64]
    return frame(FAILED, _FAILED.pack(code, errno) + text)


def decode_failed(payload: bytes) -> Failed:
    r = _Reader(payload)
    code, errno = r.unpack(_FAILED)
    return Failed(code, errno, payload[r.pos:].decode("utf-8", "replace"))


def encode_exited(info: Exited) -> bytes:
    return frame(EXITED, _EXITED.pack(
        info.wait_status, info.wall_us, info.utime_us, info.stime_us,
        info.maxrss_kb, info.reason))


def decode_exited(payload: bytes) -> Exited:
    r = _Reader(payload)
    fields = r.unpack(_EXITED)
    r.end()
    return Exited(*fields)


DONE_FRAME = HEADER.pack(0, DONE)


def encode_kill(reason: int = REASON_KILLED) -> bytes:
    return frame(KILL, _KILL.pack(reason))


def decode_kill(payload: bytes) -> int:
    r = _Reader(payload)
    (reason,) = r.unpack(_KILL)
    r.end()
    return reason


class FrameDecoder:
    """Push decoder: ``feed(bytes)`` returns the complete frames so far.

    Refuses unknown kinds and payloads over ``max_bytes`` as soon as the
    header arrives, so a bad peer can never make it buffer without bound.
    """

    def __init__(self, kinds: frozenset[int], max_bytes: int) -> None:
        self.kinds = kinds
        self.max_bytes = max_bytes
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= HEADER.size:
            length, kind = HEADER.unpack_from(self.buffer)
            if kind not in self.kinds:
                raise WireError("unexpected frame kind %#x" % kind)
            if length > self.max_bytes:
                raise WireError("frame of %d bytes exceeds %d" % (length, self.max_bytes))
            end = HEADER.size + length
            if len(self.buffer) < end:
                break
            frames.append(Frame(kind, bytes(self.buffer[HEADER.size:end])))
            del self.buffer[:end]
        if not self.buffer:
            self.buffer = bytearray()  # a large frame's room is given back, not kept for the connection's life
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self.buffer)


def request_decoder() -> FrameDecoder:
    """What the daemon accepts from a worker."""
    return FrameDecoder(frozenset((SPAWN, KILL, PING, DONE)), MAX_REQUEST_FRAME_BYTES)


def reply_decoder() -> FrameDecoder:
    """What a worker accepts from the daemon."""
    return FrameDecoder(frozenset((STARTED, FAILED, EXITED, PONG)), MAX_REPLY_FRAME_BYTES)


def encode_pong(pid: int) -> bytes:
    return frame(PONG, _STARTED.pack(pid))


def decode_pong(payload: bytes) -> int:
    """The daemon's pid."""
    r = _Reader(payload)
    (pid,) = r.unpack(_STARTED)
    r.end()
    return pid
