"""The daemon's policy: the limits and accounts it applies to scripts, whatever a request asks.

Built in the master from the settings (``hooks.build_policy``), handed to the
supervisor as a frame on the life pipe when it starts and again after each
SIGHUP, and passed on by the supervisor to its daemon. A SPAWN request only
names its location (the ``script_alias`` prefix, "" for the document root);
the location's limits and run-as account come from here, and a request can
only ask for a shorter ``max_runtime``. So a process that reaches the
ScriptSock cannot raise its own limits, as it could when they travelled in
each request.

Why the life pipe carries it: only the master holds its write end (workers
close it in ``post_fork``), the supervisor already watches it, frames arrive
in order, and nothing is left on disk for another user to replace or read.

Pure: JSON encoding, a push decoder, the clamp and the checks; no I/O.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

_LENGTH = struct.Struct(">I")
MAX_POLICY_BYTES = 16 * 1024 * 1024
VERSION = 1


class PolicyError(ValueError):
    """A policy frame that cannot be used; the message says why."""


@dataclass(frozen=True)
class Location:
    """What the daemon enforces for the scripts of one ``script_alias`` entry."""
    root: str = ""                        # the entry's absolute target (suEXEC's docroot); "" unknown
    max_runtime_ms: int = 0               # 0: no limit
    user: str | int | None = None         # run-as account (suEXEC), None: the workers' user
    group: str | int | None = None
    env_keep: tuple[str, ...] = ()        # names the configuration sets: kept by suEXEC's env cleaning
    interpreters: tuple[str, ...] = ()    # configured interpreters: their argv[1] is the script checked


@dataclass(frozen=True)
class Policy:
    """The global limits and every location; ``locations[""]`` is the document root's."""
    kill_grace_ms: int = 3000
    max_scripts: int = 0                  # 0: no cap
    queue_timeout_ms: int = 10000
    rlimit_cpu: int = -1                  # -1: unset
    rlimit_mem: int = -1
    rlimit_nproc: int = -1
    allow_root: bool = False
    locations: Mapping[str, Location] = field(default_factory=lambda: {"": Location()})

    @property
    def needs_setid(self) -> bool:
        """Whether some location runs its scripts as their own user."""
        return any(loc.user is not None for loc in self.locations.values())


def max_runtime_ms(location: Location, asked_ms: int) -> int:
    """The run time a script gets: the location's, or less if the request asked for less; 0 is none.

    A request asking for more than the policy (or for none while the policy
    has one) gets the policy's.
    """
    allowed = location.max_runtime_ms
    if asked_ms <= 0:
        return allowed
    return asked_ms if allowed == 0 else min(allowed, asked_ms)


def root_refusal(master_euid: int, uid: int, gid: int, allow_root: bool) -> str | None:
    """Why scripts may not run as the workers' ``uid``/``gid`` (root's), or None when they may.

    A root master runs scripts as gunicorn's ``user``/``group``, which
    default to root's; Apache refuses to start as ``User root`` too.
    """
    if allow_root or (uid != 0 and gid != 0):
        return None
    what = "uid 0 (root)" if uid == 0 else "gid 0 (group root)"
    if master_euid != 0:
        return ("CGI scripts would run with %s, the group gunicorn runs as: start gunicorn with another"
                " primary group, or set cgi_allow_root = True to allow it (logged at every start)" % what)
    if uid == 0:
        fix = "set user (and group) in gunicorn.conf.py to an unprivileged account, e.g. user = \"nobody\"" \
              " and group = \"nogroup\""
    else:
        fix = "set group in gunicorn.conf.py to an unprivileged group, e.g. group = \"nogroup\""
    return ("refusing to run CGI scripts with %s: gunicorn is started as root and its user/group is root's;"
            " %s, or set cgi_allow_root = True if everything here runs as root anyway (a container):"
            " a warning is then logged at every start" % (what, fix))


# -- the frame: a length and JSON ------------------------------------------------------

def encode(policy: Policy) -> bytes:
    """The policy as one frame: a big-endian u32 length, then JSON."""
    doc = {
        "version": VERSION,
        "kill_grace_ms": policy.kill_grace_ms, "max_scripts": policy.max_scripts,
        "queue_timeout_ms": policy.queue_timeout_ms, "rlimit_cpu": policy.rlimit_cpu,
        "rlimit_mem": policy.rlimit_mem, "rlimit_nproc": policy.rlimit_nproc,
        "allow_root": policy.allow_root,
        "locations": {prefix: {"root": loc.root, "max_runtime_ms": loc.max_runtime_ms, "user": loc.user,
                               "group": loc.group, "env_keep": list(loc.env_keep),
                               "interpreters": list(loc.interpreters)}
                      for prefix, loc in policy.locations.items()},
    }
    body = json.dumps(doc, separators=(",", ":")).encode()
    if len(body) > MAX_POLICY_BYTES:
        raise PolicyError("the CGI policy is %d bytes, more than %d" % (len(body), MAX_POLICY_BYTES))
    return _LENGTH.pack(len(body)) + body


def _count(doc: Mapping[str, object], key: str, low: int) -> int:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PolicyError("policy field %s: expected a whole number >= %d, got %r" % (key, low, value))
    return value


def _account(doc: Mapping[str, object], key: str) -> str | int | None:
    value = doc.get(key)
    if value is None or (isinstance(value, (str, int)) and not isinstance(value, bool)):
        return value
    raise PolicyError("policy field %s: expected a name, an id or null, got %r" % (key, value))


def _names(doc: Mapping[str, object], key: str) -> tuple[str, ...]:
    value = doc.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError("policy field %s: expected a list of strings, got %r" % (key, value))
    return tuple(value)


def decode(body: bytes) -> Policy:
    """The policy of one frame's JSON body; raises PolicyError."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise PolicyError("policy frame is not JSON: %s" % exc) from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise PolicyError("policy frame of an unknown version")
    raw_locations = doc.get("locations")
    if not isinstance(raw_locations, dict) or "" not in raw_locations:
        raise PolicyError("policy frame without the document root's location")
    locations: dict[str, Location] = {}
    for prefix, raw in raw_locations.items():
        if not isinstance(raw, dict) or not isinstance(raw.get("root", ""), str):
            raise PolicyError("policy location %r: expected an object with a root" % (prefix,))
        locations[prefix] = Location(
            root=raw.get("root", ""), max_runtime_ms=_count(raw, "max_runtime_ms", 0),
            user=_account(raw, "user"), group=_account(raw, "group"),
            env_keep=_names(raw, "env_keep"), interpreters=_names(raw, "interpreters"))
    allow_root = doc.get("allow_root")
    if not isinstance(allow_root, bool):
        raise PolicyError("policy field allow_root: expected true or false, got %r" % (allow_root,))
    return Policy(
        kill_grace_ms=_count(doc, "kill_grace_ms", 0), max_scripts=_count(doc, "max_scripts", 0),
        queue_timeout_ms=_count(doc, "queue_timeout_ms", 0), rlimit_cpu=_count(doc, "rlimit_cpu", -1),
        rlimit_mem=_count(doc, "rlimit_mem", -1), rlimit_nproc=_count(doc, "rlimit_nproc", -1),
        allow_root=allow_root, locations=locations)


class PolicyReader:
    """Push decoder for policy frames on a pipe: ``feed(bytes)`` returns the complete ones."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[Policy]:
        self.buffer += data
        out = []
        while len(self.buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self.buffer)
            if length > MAX_POLICY_BYTES:
                raise PolicyError("policy frame of %d bytes exceeds %d" % (length, MAX_POLICY_BYTES))
            end = _LENGTH.size + length
            if len(self.buffer) < end:
                break
            body = bytes(self.buffer[_LENGTH.size:end])
            del self.buffer[:end]
            out.append(decode(body))
        return out
