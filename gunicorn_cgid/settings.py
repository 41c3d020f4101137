"""gunicorn settings for gunicorn-cgid: one ``Setting`` class per key, with its docs.

Imported in the master. Importing this module registers the classes in
gunicorn's ``KNOWN_SETTINGS``; the ``gunicorn-cgid`` command imports it before
gunicorn builds its ``Config``, so every key also works as a command-line flag
and through ``GUNICORN_CMD_ARGS``. Under the stock ``gunicorn`` command the
hooks inject the values from the config file instead (see ``inject``).
Names follow Apache's directives (ScriptSock, ScriptLog, CGIDScriptTimeout...).
"""

from __future__ import annotations

import math
import sys
from types import ModuleType
from typing import Any

from gunicorn.config import Config, Setting

from gunicorn_cgid import locations

SECTION = "CGI"


def _seconds(val: Any) -> float:
    """A finite number of seconds >= 0 (bools and NaN refused)."""
    if isinstance(val, bool):
        raise TypeError("expected a number of seconds, got %r" % (val,))
    try:
        num = float(val)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("expected a number of seconds, got %r" % (val,)) from None
    if num < 0 or math.isnan(num) or math.isinf(num):
        raise ValueError("expected a number of seconds >= 0, got %r" % (val,))
    return num


def _positive_seconds(val: Any) -> float:
    """Seconds > 0: for timeouts where 0 has no sensible meaning."""
    num = _seconds(val)
    if num <= 0:
        raise ValueError("expected a number of seconds > 0, got %r" % (val,))
    return num


#: The daemon counts run time in whole milliseconds, 0 meaning "no limit".
_MIN_RUNTIME_SECONDS = 0.001


def _runtime_limit(val: Any) -> float:
    """0 (no limit) or at least a millisecond: less would round to 0 and mean no limit."""
    num = _seconds(val)
    if 0 < num < _MIN_RUNTIME_SECONDS:
        raise ValueError("expected 0 (no limit) or at least %g seconds, got %r" % (_MIN_RUNTIME_SECONDS, val))
    return num


def _non_negative_int(val: Any) -> int:
    if isinstance(val, bool):
        raise TypeError("expected a whole number, got %r" % (val,))
    try:
        num = int(val, 0) if isinstance(val, str) else int(val)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("expected a whole number, got %r" % (val,)) from None
    if num < 0 or (not isinstance(val, str) and num != val):
        raise ValueError("expected a whole number >= 0, got %r" % (val,))
    return num


def _optional_limit(val: Any) -> int | None:
    """A resource limit: unset (None or empty) for none, else a whole number > 0.

    0 is refused: it reads like "no limit" but to the kernel it is the
    tightest one (no CPU time, no address space, no new process).
    """
    if val is None or val == "":
        return None
    num = _non_negative_int(val)
    if num == 0:
        raise ValueError("expected a whole number > 0, got %r (leave the setting unset for no limit)" % (val,))
    return num


def _bool(val: Any) -> bool:
    if isinstance(val, bool):
        return val
    if isinstance(val, str) and val.strip().lower() in ("true", "on", "yes", "1"):
        return True
    if isinstance(val, str) and val.strip().lower() in ("false", "off", "no", "0"):
        return False
    raise ValueError("expected True or False, got %r" % (val,))


def _path(val: Any) -> str:
    if not isinstance(val, str) or not val or "\0" in val:
        raise ValueError("expected a path, got %r" % (val,))
    return val


def _optional_path(val: Any) -> str | None:
    return None if val is None or val == "" else _path(val)


def _pairs(val: Any, what: str) -> dict[str, str]:
    """Accept a dict, or ``K=V`` strings (comma separated, or a list) from the command line."""
    if isinstance(val, dict):
        items = list(val.items())
    else:
        if isinstance(val, str):
            val = [part for part in val.split(",") if part.strip()]
        if not isinstance(val, (list, tuple)):
            raise TypeError("expected a dict of %s, got %r" % (what, val))
        items = []
        for entry in val:
            if not isinstance(entry, str) or "=" not in entry:
                raise ValueError("expected KEY=VALUE, got %r" % (entry,))
            items.append(tuple(part.strip() for part in entry.split("=", 1)))
    out: dict[str, str] = {}
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise ValueError("expected %s as strings, got %r: %r" % (what, key, value))
        if "\0" in key or "\0" in value:
            raise ValueError("NUL byte in %r" % (key,))
        out[key] = value
    return out


def _script_alias(val: Any) -> dict[str, Any]:
    if isinstance(val, dict) and any(isinstance(entry, dict) for entry in val.values()):
        return locations.normalize(val)  # per-location entries only come from the config file
    return locations.normalize(_pairs(val, "URL prefix to directory or file"))


def _env(val: Any) -> dict[str, str]:
    env = _pairs(val, "variable names to values")
    for name in env:
        if "=" in name:
            raise ValueError("variable name %r contains '='" % (name,))
    return env


def _names(val: Any) -> list[str]:
    if isinstance(val, str):
        val = [part.strip() for part in val.split(",") if part.strip()]
    if not isinstance(val, (list, tuple)) or not all(isinstance(v, str) and v for v in val):
        raise TypeError("expected a list of names, got %r" % (val,))
    return list(val)


def _extensions(val: Any) -> list[str]:
    exts = _names(val)
    for ext in exts:
        if not ext.startswith("."):
            raise ValueError("extension %r must start with '.'" % (ext,))
    return exts


class CGISetting:
    """Mixin marking our settings; not a ``Setting`` itself, so it is not registered."""
    section = SECTION


class ScriptSock(CGISetting, Setting):
    name = "script_sock"
    cli = ["--script-sock"]
    meta = "PATH"
    validator = _path
    default = "logs/cgisock"
    desc = """\
        Path of the CGI daemon's Unix socket (Apache's ScriptSock).

        Relative to gunicorn's ``chdir``. The master's pid is appended
        (``logs/cgisock.1234``) so that two masters during a ``USR2`` upgrade
        never share a socket. The directory is created if missing; it must
        belong to the user that starts gunicorn (root when started as root)
        and be writable by no one else, else the start is refused: a script
        that could write there could replace the socket and receive every
        request. It may not be ``script_log``'s directory. Its parent may be
        writable by all if it is sticky (``1777``, like ``/tmp`` or a
        container's ``emptyDir``), as with ``run/cgid/cgisock``.
        """


class ScriptLog(CGISetting, Setting):
    name = "script_log"
    cli = ["--script-log"]
    meta = "PATH"
    validator = _optional_path
    default = None
    desc = """\
        File for the CGI error log (Apache's ScriptLog); off when unset.

        Relative to gunicorn's ``chdir``; ``-`` writes the records to the
        master's stderr. Records are written only for failed CGI requests;
        the workers create the file with the first one, as Apache's
        children do. A master started as root with another ``user`` creates
        it for them at start (mode 0640, owned by ``user`` and ``group``),
        and its directory if missing, but never changes the owner of a
        directory. It may not be in ``script_sock``'s directory.
        """


class ScriptLogBuffer(CGISetting, Setting):
    name = "script_log_buffer"
    cli = ["--script-log-buffer"]
    meta = "BYTES"
    validator = _non_negative_int
    default = 1024
    desc = """\
        How many bytes of a PUT or POST body ScriptLog records (Apache's ScriptLogBuffer).

        0: no body is recorded, the rest of the record is.
        """


class ScriptLogLength(CGISetting, Setting):
    name = "script_log_length"
    cli = ["--script-log-length"]
    meta = "BYTES"
    validator = _non_negative_int
    default = 10385760
    desc = """\
        Size past which ScriptLog is no longer written (Apache's ScriptLogLength).

        As in Apache, the size is checked before each record, so the last one
        may overshoot it. 0: a record is written only while the log is empty,
        so it holds at most one; unset ``script_log`` to turn the log off.
        Not applied when ``script_log`` is ``-``.
        """


class ScriptAlias(CGISetting, Setting):
    name = "script_alias"
    cli = ["--script-alias"]
    meta = "PREFIX=PATH[,PREFIX=PATH]"
    validator = _script_alias
    default = {"/cgi-bin/": "cgi-bin/"}
    desc = """\
        URL prefixes mapped to CGI directories or single scripts (Apache's ScriptAlias).

        A dict ``{"/cgi-bin/": "cgi-bin/"}``; paths are relative to gunicorn's
        ``chdir``. The longest matching prefix wins. A directory makes every
        file under it a script; a file makes the rest of the URL its PATH_INFO.

        An entry may instead be a dict with ``path`` and per-location
        settings (Apache's ``<Location>``): ``env``, ``pass_env``,
        ``interpreters`` (added to the global ones), ``timeout``,
        ``max_runtime``, ``limit_request_body`` (replacing the global ones),
        ``user`` and ``group`` (run its scripts as that user, with suEXEC's
        checks), ``x_sendfile`` (directories an ``X-Sendfile`` answer may
        name). An unknown key stops the start.
        """


class CGIDocumentRoot(CGISetting, Setting):
    name = "cgi_document_root"
    cli = ["--cgi-document-root"]
    meta = "PATH"
    validator = _optional_path
    default = None
    desc = """\
        Document root whose files named by ``cgi_extensions`` run as CGI.

        Apache's ``AddHandler cgi-script .cgi`` with ``Options +ExecCGI``.
        Also the DOCUMENT_ROOT scripts see. Unset: no handler-style mapping and
        DOCUMENT_ROOT is gunicorn's ``chdir``.
        """


class CGIExtensions(CGISetting, Setting):
    name = "cgi_extensions"
    cli = ["--cgi-extensions"]
    meta = "EXT[,EXT]"
    validator = _extensions
    default = [".cgi"]
    desc = """\
        File extensions that run as CGI under ``cgi_document_root``.
        """


def _interpreters(val: Any) -> dict[str, str]:
    """Extensions in lower case, as extension matching ignores case."""
    table: dict[str, str] = {}
    for ext, prog in _pairs(val, "extensions to interpreter paths").items():
        if not ext.startswith("."):
            raise ValueError("extension %r must start with '.'" % (ext,))
        if not prog.startswith("/"):
            raise ValueError("interpreter %r for %r must be an absolute path" % (prog, ext))
        key = ext.lower()
        if table.get(key, prog) != prog:
            raise ValueError("extension %r given twice with different interpreters (%r and %r);"
                             " extensions ignore case" % (key, table[key], prog))
        table[key] = prog
    return table


class CGIInterpreters(CGISetting, Setting):
    name = "cgi_interpreters"
    cli = ["--cgi-interpreters"]
    meta = "EXT=PATH[,EXT=PATH]"
    validator = _interpreters
    default = {}
    desc = """\
        Interpreters for scripts by extension, e.g. ``{".php": "/usr/bin/php-cgi"}``.

        Apache's ``Action`` with ``AddHandler``: the interpreter runs with the
        script's path as its argument and SCRIPT_FILENAME set to the script,
        which needs to be readable, not executable. REDIRECT_STATUS=200 is set,
        as after Apache's internal redirect to the action (php-cgi's
        ``cgi.force_redirect`` checks it). Such files run as CGI under
        ``script_alias`` and ``cgi_document_root`` alike.

        Extensions match regardless of case, like ``cgi_extensions``: the keys
        are stored in lower case (``.PHP`` becomes ``.php``).
        """


class CGIAcceptPathInfo(CGISetting, Setting):
    name = "cgi_accept_path_info"
    cli = ["--cgi-accept-path-info"]
    meta = "BOOL"
    validator = _bool
    default = True
    desc = """\
        Accept extra path after the script name as PATH_INFO (Apache's AcceptPathInfo).

        Off: a URL with extra path is answered 404.
        """


class CGIFollowSymlinks(CGISetting, Setting):
    name = "cgi_follow_symlinks"
    cli = ["--cgi-follow-symlinks"]
    meta = "BOOL"
    validator = _bool
    default = False
    desc = """\
        Run scripts whose symlinks lead outside the mapped directory.

        Off: a symlink is followed only when its target stays inside the tree.
        """


class CGITimeout(CGISetting, Setting):
    name = "cgi_timeout"
    cli = ["--cgi-timeout"]
    meta = "SECONDS"
    validator = _positive_seconds
    default = 60
    desc = """\
        Idle timeout for a CGI script (Apache's CGIDScriptTimeout).

        When the script neither reads its input nor writes output for this
        long it is killed: 504 before its headers, a cut response after.
        Must be more than 0: 0 is refused, there is no "off" (nor in Apache);
        a large value comes close.
        """


class CGIMaxRuntime(CGISetting, Setting):
    name = "cgi_max_runtime"
    cli = ["--cgi-max-runtime"]
    meta = "SECONDS"
    validator = _runtime_limit
    default = 0
    desc = """\
        Total run time allowed to a CGI script; 0 for no limit (Apache has none).

        Counted in milliseconds: a value between 0 and 0.001 is refused.
        """


class CGIKillGrace(CGISetting, Setting):
    name = "cgi_kill_grace"
    cli = ["--cgi-kill-grace"]
    meta = "SECONDS"
    validator = _seconds
    default = 3
    desc = """\
        Seconds between SIGTERM and SIGKILL when a script's process group is killed.

        0: SIGKILL follows SIGTERM at once, scripts get no time to clean up.
        Also the time scripts get when the daemon stops.
        """


class CGIMaxScripts(CGISetting, Setting):
    name = "cgi_max_scripts"
    cli = ["--cgi-max-scripts"]
    meta = "INT"
    validator = _non_negative_int
    default = 0
    desc = """\
        How many CGI scripts may run at once; 0 for no limit.

        Past it, requests wait up to ``cgi_queue_timeout`` for a slot, then
        get 503 with ``Retry-After``.
        """


class CGIQueueTimeout(CGISetting, Setting):
    name = "cgi_queue_timeout"
    cli = ["--cgi-queue-timeout"]
    meta = "SECONDS"
    validator = _seconds
    default = 10
    desc = """\
        How long a request waits for a free slot under ``cgi_max_scripts``.

        0: no waiting; a request that finds every slot taken gets 503 at once.
        """


class CGILimitRequestBody(CGISetting, Setting):
    name = "cgi_limit_request_body"
    cli = ["--cgi-limit-request-body"]
    meta = "BYTES"
    validator = _non_negative_int
    default = 1024 * 1024 * 1024
    desc = """\
        Largest request body a script may be sent, in bytes (Apache's LimitRequestBody).

        0: unlimited. A larger ``Content-Length`` is answered 413 before any
        script runs; a chunked body that grows past it kills its script and
        is answered 413 (or its response is cut if already started).
        Default 1 GiB, as Apache's since 2.4.54.
        """


def _static_alias(val: Any) -> dict[str, str]:
    aliases = _pairs(val, "URL prefix to directory")
    for prefix in aliases:
        if not prefix.startswith("/") or not prefix.endswith("/"):
            raise ValueError("static URL prefix %r must start and end with '/'" % (prefix,))
    return aliases


class StaticAlias(CGISetting, Setting):
    name = "static_alias"
    cli = ["--static-alias"]
    meta = "PREFIX=DIR[,PREFIX=DIR]"
    validator = _static_alias
    default = {}
    desc = """\
        URL prefixes served as static files from directories (Apache's Alias).

        A dict ``{"/cgit-static/": "/usr/share/cgit/"}``; paths are relative
        to gunicorn's ``chdir``. Files get their type, ``ETag`` and
        ``Last-Modified`` (304), ``HEAD`` and ``Range``, and a precompressed
        ``.gz``/``.br`` variant when one lies beside them; no directory
        listings, nothing outside the directory. Empty: no static files.
        """


class HealthPath(CGISetting, Setting):
    name = "health_path"
    cli = ["--health-path"]
    meta = "PATH"
    validator = _optional_path
    default = None
    desc = """\
        A URL path answered 200 only when a round trip to the CGI daemon succeeds now.

        503 with the reason otherwise (for readiness and liveness probes);
        logged at info level, never as an error. Unset: no health endpoint.
        """


class CGIPassTrace(CGISetting, Setting):
    name = "cgi_pass_trace"
    cli = ["--cgi-pass-trace"]
    meta = "BOOL"
    validator = _bool
    default = False
    desc = """\
        Pass TRACE requests to scripts.

        Off (the default): TRACE is answered 405 with ``Allow`` and never
        reaches a script, which would otherwise see every request header,
        cookies included (Apache's ``TraceEnable off``). CONNECT is always 405.
        """


class CGIEnv(CGISetting, Setting):
    name = "cgi_env"
    cli = ["--cgi-env"]
    meta = "NAME=VALUE[,NAME=VALUE]"
    validator = _env
    default = {}
    desc = """\
        Fixed variables added to every script's environment (Apache's SetEnv).
        """


class CGIPassEnv(CGISetting, Setting):
    name = "cgi_pass_env"
    cli = ["--cgi-pass-env"]
    meta = "NAME[,NAME]"
    validator = _names
    default = []
    desc = """\
        Variables of gunicorn's own environment passed to scripts (Apache's PassEnv).

        Nothing else of gunicorn's environment reaches a script.
        """


class CGIPath(CGISetting, Setting):
    name = "cgi_path"
    cli = ["--cgi-path"]
    meta = "PATH"
    validator = _path
    default = "/usr/local/bin:/usr/bin:/bin"
    desc = """\
        The PATH scripts see (``cgi_env`` may also set it).
        """


class CGIPassAuth(CGISetting, Setting):
    name = "cgi_pass_auth"
    cli = ["--cgi-pass-auth"]
    meta = "BOOL"
    validator = _bool
    default = False
    desc = """\
        Export Authorization and Proxy-Authorization to scripts (Apache's CGIPassAuth).
        """


class CGIAllowRoot(CGISetting, Setting):
    name = "cgi_allow_root"
    cli = ["--cgi-allow-root"]
    meta = "BOOL"
    validator = _bool
    default = False
    desc = """\
        Let CGI scripts run as root (uid 0 or gid 0); off by default.

        Scripts run as gunicorn's ``user`` and ``group``. When gunicorn is
        started as root and they are not set (or are root's), or when
        gunicorn itself runs with group 0, the start is refused, as Apache
        refuses ``User root``. Set this only where everything runs as root
        anyway (some containers): a warning is then logged at every start.
        ``GUNICORN_CGID_ALLOW_ROOT=1`` in gunicorn's environment does the
        same, for an image whose configuration file is not yours to edit.
        Per-location run-as users (``script_alias`` entries with ``user``)
        are never root, whatever this says.
        """


class CGIRlimitCPU(CGISetting, Setting):
    name = "cgi_rlimit_cpu"
    cli = ["--cgi-rlimit-cpu"]
    meta = "SECONDS"
    validator = _optional_limit
    default = None
    desc = """\
        CPU seconds a script may use (Apache's RLimitCPU); unset for no limit.

        0 is refused (a script would be killed as soon as it ran): leave it unset.
        """


class CGIRlimitMem(CGISetting, Setting):
    name = "cgi_rlimit_mem"
    cli = ["--cgi-rlimit-mem"]
    meta = "BYTES"
    validator = _optional_limit
    default = None
    desc = """\
        Address space a script may use, in bytes (Apache's RLimitMEM); unset for no limit.

        0 is refused (no script could even start): leave it unset.
        """


class CGIRlimitNproc(CGISetting, Setting):
    name = "cgi_rlimit_nproc"
    cli = ["--cgi-rlimit-nproc"]
    meta = "INT"
    validator = _optional_limit
    default = None
    desc = """\
        Processes the scripts' user may run (Apache's RLimitNPROC); unset for no limit.

        The count covers all of that user's processes, gunicorn's included.
        0 is refused, as it reads like "no limit": leave it unset.
        """


CGI_SETTINGS: tuple[type[Setting], ...] = tuple(
    cls for cls in list(globals().values())
    if isinstance(cls, type) and issubclass(cls, CGISetting) and cls is not CGISetting
)


def config_namespace(cfg: Config) -> dict[str, Any]:
    """The names the config file defined (gunicorn runs it as module ``__config__``)."""
    location = cfg.settings["config"].value or ""
    if location.startswith("python:"):
        module = sys.modules.get(location[len("python:"):])
    else:
        module = sys.modules.get("__config__")
    return vars(module) if isinstance(module, ModuleType) else {}


def inject(cfg: Config, namespace: dict[str, Any] | None = None) -> None:
    """Add our settings to a ``Config`` built before they were registered.

    Under the stock ``gunicorn`` command the config file imports us after
    gunicorn made its settings table, so our keys are missing and gunicorn
    ignored them. Here each missing key gets its default, or the config
    file's value, validated. Raises ``ValueError`` naming the key.
    """
    if namespace is None:
        namespace = config_namespace(cfg)
    for cls in CGI_SETTINGS:
        if cls.name in cfg.settings:
            continue
        setting = cls()
        if cls.name in namespace:
            try:
                setting.set(namespace[cls.name])
            except (TypeError, ValueError) as exc:
                raise ValueError("Invalid value for %s: %s" % (cls.name, exc)) from None
        cfg.settings[cls.name] = setting


def cgi_setting(cfg: Any, name: str) -> Any:
    """Read one of our settings, falling back to its default when absent."""
    try:
        return getattr(cfg, name)
    except AttributeError:
        for cls in CGI_SETTINGS:
            if cls.name == name:
                return cls().value
        raise


def adopt_config_being_loaded() -> bool:
    """Make the ``Config`` gunicorn is loading know our settings, when a config file imports us.

    gunicorn builds its ``Config`` (and with it validation, ``--print-config``
    and ``--check-config``) from the settings registered before the config
    file runs, and the config file is the first code of ours the stock
    ``gunicorn`` command runs. It runs inside the application's config loader,
    whose ``self.cfg`` is that ``Config`` (the attribute gunicorn's custom
    application docs use): our settings join it there with their defaults, and
    gunicorn itself then sets, validates and prints the config file's values.
    When no loader is found (another entry point), ``inject`` in
    ``on_starting`` does the same later. Returns whether a Config was found.
    """
    frame = sys._getframe(1)
    for _ in range(64):
        if frame is None:
            return False
        cfg = getattr(frame.f_locals.get("self"), "cfg", None)
        if isinstance(cfg, Config) and frame.f_code.co_name.startswith("load_config"):
            for cls in CGI_SETTINGS:
                if cls.name not in cfg.settings:
                    cfg.settings[cls.name] = cls()
            return True
        frame = frame.f_back
    return False


adopt_config_being_loaded()
