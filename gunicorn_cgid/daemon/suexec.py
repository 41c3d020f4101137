"""Running scripts as their own user: Apache's suEXEC checks, and the capabilities the daemon keeps.

Runs in the daemon (``check``, ``clean_env``, the capability calls) and
where the daemon's policy is loaded (``resolve``). Never imports gunicorn or
``logging``.

A ``script_alias`` entry with ``user`` (and optionally ``group``) has its
scripts started as that account. ``resolve`` turns the names into a
``RunAs`` once, when the policy is loaded, and refuses root and ids below
``UID_MIN``/``GID_MIN``. Before each exec, ``check`` applies suEXEC's checks
to the real files and raises ``Refusal`` naming the first one that fails,
worded as suEXEC logs it. Apache's suEXEC answers every failure with a 500
(its wrapper exits before the script prints a header); here each check has
its status:

==============================================  ======  ===================================================
check, in this order                            status  log line (``Refusal.message``)
==============================================  ======  ===================================================
target uid is 0 or below ``UID_MIN``            500     ``cannot run as forbidden uid (1/path)``
target gid is 0 or below ``GID_MIN``, or a      500     ``cannot run as forbidden gid (0/path)``
supplementary group is 0
root or script path not absolute; root          500     ``cannot get docroot information (root)``
missing or unreadable
a ``..`` component in the script's path         403     ``invalid command (path)``
script not below its root (a file alias: not    403     ``command not in docroot (path; docroot root)``
the file itself), by name, or once symlinks
are resolved
a directory from the root down to the script    500     ``cannot stat directory: (dir)``
cannot be stat'ed, or is not a directory
a directory from the root down to the script    403     ``directory is writable by others: (dir)``
is writable by group or others
script cannot be resolved or stat'ed            500     ``cannot stat program: (path)``
script is not a regular file                    403     ``program is not a regular file: (path)``
script is writable by group or others           403     ``file is writable by others: (path)``
script is setuid or setgid                      403     ``file is either setuid or setgid: (path)``
script carries file capabilities                403     ``file has capabilities: (path)``
a directory or the script is not owned by the   403     ``target uid/gid (1001/1001) mismatch with
target uid and gid                                      directory (0/0) or program (1001/1001): (path)``
script has no owner execute bit                 403     ``file has no execute permission: (path)``
==============================================  ======  ===================================================

The 500s are what the server's configuration or environment causes (a
forbidden account, a root that is gone, a path the daemon may not search):
the administrator must act. The 403s are what the script's own files
cause: the user must fix their files. Paths in the messages have control
characters and bytes that are not UTF-8 escaped.

Stricter than suEXEC: the directories checked are every directory from the
location's root down to the script, both along the path as requested and
along the resolved one (suEXEC checks only the script's own directory), so
no directory consulted below the root can be changed by anyone but the
target user; a script that is a symlink is allowed when it resolves inside
the root (suEXEC refuses every symlinked program), and its real file is
what is checked; file capabilities are refused like setuid bits. A failure
to become the target user (setgroups, setgid, setuid in the child) is an
exec error, a 500, as in suEXEC.

The environment of a script run as another user is cleaned as suEXEC
cleans it (``clean_env``): the CGI variables, ``HTTP_*`` and ``SSL_*``
(minus values that start with ``()``, bash function definitions), the
names the configuration sets, and ``PATH`` set to ``SAFE_PATH`` unless the
configuration sets it. ``LD_PRELOAD`` and the like never reach a script
that runs as someone else.

Privileges. With no ``user`` anywhere the daemon drops to the workers' user
and keeps nothing, as before, and spawns with posix_spawn. With one, it
still runs as the workers' uid and gid but keeps ``CAP_SETUID`` and
``CAP_SETGID`` (to start scripts as their users) and ``CAP_KILL`` (to end
their process groups and leftovers, which belong to other uids), nothing
else: ``PR_SET_KEEPCAPS`` before ``setuid``, then ``capset`` with those
three effective and permitted, none inheritable, no ambient ones, and
``PR_SET_DUMPABLE`` 0. A script loses them all at exec: its uid is not 0,
and nothing is inheritable or ambient. Measured consequences: a process of
the workers' uid cannot ptrace the daemon (the kernel refuses a tracer that
lacks the tracee's capabilities, and the daemon is not dumpable) nor read
its ``/proc/<pid>/environ``, but can still signal it, as before; a script's
user can do none of the three (the daemon's real and saved uids stay the
workers').

These capabilities are as strong as root: CAP_SETUID can become uid 0.
That is no worse than Apache's suEXEC, a setuid-root binary that the
server's user may run with any arguments: there, whoever holds the
server's uid can run any program under the docroot as any user above
``AP_UID_MIN``. Here the capabilities live in the daemon alone, which only
the workers of this master can talk to and which takes the users from its
own policy; the workers, which parse client requests, keep none, and the
checks run in the same order, on the same files, before the same exec.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import os
import pwd
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass

# Apache's configure defaults for --with-suexec-uidmin / --with-suexec-gidmin,
# which Debian's suexec keeps: system accounts below these never run scripts.
UID_MIN = 100
GID_MIN = 100
SAFE_PATH = b"/usr/local/bin:/usr/bin:/bin"  # Apache's AP_SAFE_PATH default

CAP_KILL = 5
CAP_SETGID = 6
CAP_SETUID = 7
KEPT_CAPABILITIES = (CAP_KILL, CAP_SETGID, CAP_SETUID)

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# suEXEC's safe_env_lst: names kept as they are, and prefixes.
SAFE_ENV = frozenset(name.encode() for name in (
    "AUTH_TYPE", "CONTENT_LENGTH", "CONTENT_TYPE", "CONTEXT_DOCUMENT_ROOT", "CONTEXT_PREFIX",
    "DATE_GMT", "DATE_LOCAL", "DOCUMENT_ARGS", "DOCUMENT_NAME", "DOCUMENT_PATH_INFO", "DOCUMENT_ROOT",
    "DOCUMENT_URI", "GATEWAY_INTERFACE", "HTTPS", "LAST_MODIFIED", "PATH_INFO", "PATH_TRANSLATED",
    "QUERY_STRING", "QUERY_STRING_UNESCAPED", "REMOTE_ADDR", "REMOTE_HOST", "REMOTE_IDENT",
    "REMOTE_PORT", "REMOTE_USER", "REDIRECT_ERROR_NOTES", "REDIRECT_HANDLER", "REDIRECT_QUERY_STRING",
    "REDIRECT_REMOTE_USER", "REDIRECT_SCRIPT_FILENAME", "REDIRECT_STATUS", "REDIRECT_URL",
    "REQUEST_METHOD", "REQUEST_URI", "REQUEST_SCHEME", "SCRIPT_FILENAME", "SCRIPT_NAME", "SCRIPT_URI",
    "SCRIPT_URL", "SERVER_ADMIN", "SERVER_NAME", "SERVER_ADDR", "SERVER_PORT", "SERVER_PROTOCOL",
    "SERVER_SIGNATURE", "SERVER_SOFTWARE", "UNIQUE_ID", "USER_NAME", "TZ"))
SAFE_ENV_PREFIXES = (b"HTTP_", b"SSL_")

_WRITABLE_BY_OTHERS = stat.S_IWGRP | stat.S_IWOTH
_XATTR_CAPS = "security.capability"


@dataclass(frozen=True)
class RunAs:
    """The account a location's scripts run as, resolved once when the policy is loaded."""
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, the gid included
    name: str


class Refusal(Exception):
    """A suEXEC check failed: ``status`` (403 or 500) and a one-line ``message`` naming it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- the account ---------------------------------------------------------------------

def resolve(user: str | int, group: str | int | None = None) -> RunAs:
    """The ``RunAs`` for a location's ``user`` and ``group``; ValueError says what is wrong.

    ``user`` is a name or a uid, and must be an account (its name gives the
    supplementary groups, as ``initgroups`` does); ``group`` is a name or a
    gid, by default the user's primary group. Root, and ids below
    ``UID_MIN``/``GID_MIN``, are refused.
    """
    pw = _account(user)
    if pw is None:
        raise ValueError("invalid target user name: (%s): no such account" % (user,))
    uid = pw.pw_uid
    if uid == 0 or uid < UID_MIN:
        raise ValueError("cannot run as forbidden uid (%d/%s): scripts never run as root or as a uid"
                         " below %d" % (uid, pw.pw_name, UID_MIN))
    if group is None:
        gid = pw.pw_gid
    else:
        gid_found = _group(group)
        if gid_found is None:
            raise ValueError("invalid target group name: (%s): no such group" % (group,))
        gid = gid_found
    if gid == 0 or gid < GID_MIN:
        raise ValueError("cannot run as forbidden gid (%d/%s): scripts never run as group 0 or as a gid"
                         " below %d" % (gid, pw.pw_name, GID_MIN))
    groups = [gid]
    try:
        groups += [g for g in os.getgrouplist(pw.pw_name, gid) if g != gid]
    except OSError:
        pass
    groups = list(dict.fromkeys(groups))
    if 0 in groups:
        raise ValueError("cannot run as forbidden gid (0/%s): %s is a member of group 0"
                         % (pw.pw_name, pw.pw_name))
    return RunAs(uid=uid, gid=gid, groups=tuple(groups), name=pw.pw_name)


def _account(user: str | int) -> pwd.struct_passwd | None:
    try:
        if isinstance(user, int):
            return pwd.getpwuid(user)
        try:
            return pwd.getpwnam(user)
        except KeyError:
            if user.isdigit():
                return pwd.getpwuid(int(user))
            raise
    except (KeyError, OverflowError, ValueError):
        return None


def _group(group: str | int) -> int | None:
    if isinstance(group, int):
        return group if group >= 0 else None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        return int(group) if group.isdigit() else None


# -- the checks before exec ------------------------------------------------------------

def check(run_as: RunAs, filename: bytes, root: bytes) -> None:
    """suEXEC's checks on the real files before ``filename`` is exec'd as ``run_as``.

    ``root`` is the location's directory, or the script itself for an alias
    to one file; both are absolute. Raises ``Refusal`` at the first check
    that fails (see the table in the module docstring). Without a symlink
    below the root this is one ``stat`` of the root and one ``lstat`` per
    path component below it; a symlink costs two ``realpath`` more.
    """
    if run_as.uid == 0 or run_as.uid < UID_MIN:
        raise Refusal(500, "cannot run as forbidden uid (%d/%s)" % (run_as.uid, _show(filename)))
    if run_as.gid == 0 or run_as.gid < GID_MIN or 0 in run_as.groups:
        gid = 0 if 0 in run_as.groups else run_as.gid
        raise Refusal(500, "cannot run as forbidden gid (%d/%s)" % (gid, _show(filename)))
    if not (os.path.isabs(root) and os.path.isabs(filename)):
        raise Refusal(500, "cannot get docroot information (%s): the root and the script must be absolute"
                      % _show(root))
    try:
        root_st = os.stat(root)
    except (OSError, ValueError):
        raise Refusal(500, "cannot get docroot information (%s)" % _show(root)) from None
    file_alias = not stat.S_ISDIR(root_st.st_mode)
    if b".." in filename.split(b"/"):
        raise Refusal(403, "invalid command (%s)" % _show(filename))
    root = os.path.normpath(root)
    below = _below(root, os.path.normpath(filename), file_alias)
    if below is None:
        raise Refusal(403, "command not in docroot (%s; docroot %s)" % (_show(filename), _show(root)))
    found = _walk(root, root_st, below, file_alias)
    if found is None:  # a symlink below the root
        found = _walk_resolved(root, os.path.normpath(filename), below, file_alias)
    real, prg, dirs, own_dir = found

    if not stat.S_ISREG(prg.st_mode):
        raise Refusal(403, "program is not a regular file: (%s)" % _show(real))
    if prg.st_mode & _WRITABLE_BY_OTHERS:
        raise Refusal(403, "file is writable by others: (%s)" % _show(real))
    if prg.st_mode & (stat.S_ISUID | stat.S_ISGID):
        raise Refusal(403, "file is either setuid or setgid: (%s)" % _show(real))
    if _has_file_capabilities(real):
        raise Refusal(403, "file has capabilities: (%s)" % _show(real))
    own = (run_as.uid, run_as.gid)
    if (prg.st_uid, prg.st_gid) != own or any((st.st_uid, st.st_gid) != own for st in dirs):
        # The directory named: the first one that is not the user's, else the script's own.
        bad = next((st for st in dirs if (st.st_uid, st.st_gid) != own), own_dir)
        raise Refusal(403, "target uid/gid (%d/%d) mismatch with directory (%d/%d) or program (%d/%d): (%s)"
                      % (run_as.uid, run_as.gid, bad.st_uid, bad.st_gid, prg.st_uid, prg.st_gid, _show(real)))
    if not prg.st_mode & stat.S_IXUSR:
        raise Refusal(403, "file has no execute permission: (%s)" % _show(real))


_Found = tuple[bytes, os.stat_result, list[os.stat_result], os.stat_result]  # real path, program, dirs, its dir


def _dir_ok(path: bytes, st: os.stat_result) -> os.stat_result:
    if not stat.S_ISDIR(st.st_mode):
        raise Refusal(500, "cannot stat directory: (%s)" % _show(path))
    if st.st_mode & _WRITABLE_BY_OTHERS:
        raise Refusal(403, "directory is writable by others: (%s)" % _show(path))
    return st


def _stat_dir(path: bytes, follow: bool) -> os.stat_result:
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError:
        raise Refusal(500, "cannot stat directory: (%s)" % _show(path)) from None
    return _dir_ok(path, st)


def _stat_program(path: bytes) -> os.stat_result:
    try:
        return os.lstat(path)
    except OSError:
        raise Refusal(500, "cannot stat program: (%s)" % _show(path)) from None


def _walk(root: bytes, root_st: os.stat_result, below: list[bytes], file_alias: bool) -> _Found | None:
    """The directories and the script along the path as given; None at the first symlink below the root."""
    if file_alias:
        prg = _stat_program(root)
        if stat.S_ISLNK(prg.st_mode):
            return None
        parent = _stat_dir(os.path.dirname(root), follow=True)
        return root, prg, [parent], parent
    dirs = [_dir_ok(root, root_st)]
    path = root
    for part in below[:-1]:
        path = os.path.join(path, part)
        try:
            st = os.lstat(path)
        except OSError:
            raise Refusal(500, "cannot stat directory: (%s)" % _show(path)) from None
        if stat.S_ISLNK(st.st_mode):
            return None
        dirs.append(_dir_ok(path, st))
    path = os.path.join(path, below[-1])
    prg = _stat_program(path)
    if stat.S_ISLNK(prg.st_mode):
        return None
    return path, prg, dirs, dirs[-1]


def _walk_resolved(root: bytes, filename: bytes, below: list[bytes], file_alias: bool) -> _Found:
    """With symlinks below the root: the real file must be inside the real root.

    Checked: every directory along the requested path (each prefix,
    symlinks followed) and along the resolved one, so that no directory
    consulted below the root can be changed by anyone but the owner.
    """
    try:
        real_root = os.path.realpath(root, strict=True)
    except (OSError, ValueError):
        raise Refusal(500, "cannot get docroot information (%s)" % _show(root)) from None
    try:
        real = os.path.realpath(filename, strict=True)
    except (OSError, ValueError):
        raise Refusal(500, "cannot stat program: (%s)" % _show(filename)) from None
    if file_alias:
        inside = real == real_root
    else:
        inside = real.startswith(real_root.rstrip(b"/") + b"/")
    if not inside:
        raise Refusal(403, "command not in docroot (%s; docroot %s)" % (_show(real), _show(real_root)))
    if file_alias:
        lexical = [os.path.dirname(filename)]
        resolved = [os.path.dirname(real)]
    else:
        lexical = _chain(root, below[:-1])
        resolved = _chain(real_root, real[len(real_root.rstrip(b"/")) + 1:].split(b"/")[:-1])
    dirs = [_stat_dir(path, follow=False) for path in resolved]
    own_dir = dirs[-1]
    dirs += [_stat_dir(path, follow=True) for path in lexical]
    return real, _stat_program(real), dirs, own_dir


def _below(root: bytes, filename: bytes, file_alias: bool) -> list[bytes] | None:
    """The components of ``filename`` below ``root`` (both normalised), or None if it is elsewhere."""
    if file_alias:
        return [os.path.basename(filename)] if filename == root else None
    prefix = root.rstrip(b"/") + b"/"
    if not filename.startswith(prefix):
        return None
    parts = [p for p in filename[len(prefix):].split(b"/") if p]
    return parts or None


def _chain(top: bytes, parts: list[bytes]) -> list[bytes]:
    """``top`` and each directory below it along ``parts``."""
    out = [top]
    for part in parts:
        out.append(os.path.join(out[-1], part))
    return out


def _has_file_capabilities(path: bytes) -> bool:
    try:
        os.getxattr(path, _XATTR_CAPS, follow_symlinks=False)
    except OSError as exc:
        return exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)
    return True


def _show(path: bytes) -> str:
    """A path for a log line: not UTF-8 and control characters escaped, as Apache escapes log items."""
    text = path.decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


# -- the environment ---------------------------------------------------------------

def clean_env(env: Mapping[bytes, bytes], keep: Collection[bytes] = ()) -> dict[bytes, bytes]:
    """suEXEC's clean_env: what a script run as another user may inherit.

    Keeps suEXEC's safe names, ``HTTP_*`` and ``SSL_*`` (except values that
    start with ``()``), and the names in ``keep`` (those the configuration
    sets); ``PATH`` is ``SAFE_PATH`` unless ``keep`` names it.
    """
    out = {b"PATH": SAFE_PATH}
    for name, value in env.items():
        if name in keep:
            out[name] = value
        elif name in SAFE_ENV:
            out[name] = value
        elif name.startswith(SAFE_ENV_PREFIXES) and not value.startswith(b"()"):
            out[name] = value
    return out


# -- the daemon's capabilities -----------------------------------------------------------

class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_libc = None


def _lib() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    lib = _lib()
    lib.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    result = lib.prctl(option, arg2, arg3, 0, 0)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, "prctl(%d): %s" % (option, os.strerror(err)))
    return result


def capabilities(pid: int = 0) -> tuple[int, int, int]:
    """(effective, permitted, inheritable) capability masks of ``pid`` (0: this thread)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, pid)
    data = (_CapData * 2)()
    if _lib().capget(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "capget: %s" % os.strerror(err))
    effective, permitted, inheritable = (getattr(data[0], f) | (getattr(data[1], f) << 32)
                                         for f in ("effective", "permitted", "inheritable"))
    return effective, permitted, inheritable


def _capset(mask: int) -> None:
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in range(2):
        word = (mask >> (32 * i)) & 0xFFFFFFFF
        data[i].effective = data[i].permitted = word
        data[i].inheritable = 0
    if _lib().capset(ctypes.byref(header), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, "capset: %s" % os.strerror(err))


def _mask(caps: Collection[int]) -> int:
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    return mask


KEPT_MASK = _mask(KEPT_CAPABILITIES)


def keep_capabilities_across_setuid() -> None:
    """Before the daemon's ``setuid`` away from root: keep the permitted set through it."""
    _prctl(PR_SET_KEEPCAPS, 1)


def limit_to_setid_capabilities() -> None:
    """After the ``setuid`` (or in a non-root daemon given them): keep only ``KEPT_CAPABILITIES``.

    Effective and permitted become exactly those, nothing inheritable or
    ambient, keep-caps off again, and the daemon not dumpable. Raises
    OSError when the permitted set lacks one of them.
    """
    _effective, permitted, _inheritable = capabilities()
    missing = [cap for cap in KEPT_CAPABILITIES if not permitted & (1 << cap)]
    if missing:
        names = {CAP_KILL: "CAP_KILL", CAP_SETGID: "CAP_SETGID", CAP_SETUID: "CAP_SETUID"}
        raise OSError(errno.EPERM, "running scripts as their own user needs %s; start gunicorn as root"
                      % ", ".join(names[c] for c in missing))
    _capset(KEPT_MASK)
    try:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError:
        pass  # before Linux 4.3 there is no ambient set
    _prctl(PR_SET_KEEPCAPS, 0)
    _prctl(PR_SET_DUMPABLE, 0)
    effective, permitted, inheritable = capabilities()
    if effective != KEPT_MASK or permitted != KEPT_MASK or inheritable:
        raise OSError(errno.EPERM, "capabilities are %x/%x/%x after capset, expected %x"
                      % (effective, permitted, inheritable, KEPT_MASK))


def drop_setid_capabilities() -> None:
    """A reload left no location with a ``user``: give up every capability for good."""
    _capset(0)


def dumpable() -> int:
    return _prctl(PR_GET_DUMPABLE)
