"""The CGI settings as the worker uses them, derived once per worker from gunicorn's ``Config``.

Runs in the worker. gunicorn builds a new ``Config`` on every SIGHUP and forks
new workers with it, so deriving the options once per worker picks up reloads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from gunicorn_cgid import settings
from gunicorn_cgid.mapping import Alias, make_aliases


@dataclass(frozen=True)
class Location:
    """The settings one ``script_alias`` entry may override, resolved against the global ones."""
    set_env: dict[str, str]
    passed_env: dict[str, str]
    interpreters: dict[str, str]   # lower-case extension -> interpreter
    timeout: float
    max_runtime: float
    limit_request_body: int        # bytes, 0 for unlimited
    user: str | int | None         # run-as user (enforced by the daemon), None: the workers' user
    group: str | int | None
    x_sendfile: tuple[str, ...]    # directories an X-Sendfile answer may name


@dataclass(frozen=True)
class Options:
    sock_path: str
    aliases: list[Alias]
    document_root: str | None      # handler-style root (cgi_document_root), or None
    docroot_env: str               # DOCUMENT_ROOT for scripts
    extensions: list[str]          # cgi_extensions plus the interpreters' extensions
    accept_path_info: bool
    follow_symlinks: bool
    default: Location              # the global settings (and the document root's)
    locations: dict[str, Location]  # script_alias prefix -> its settings
    kill_grace: float
    max_scripts: int
    queue_timeout: float
    path: str
    pass_auth: bool
    rlimit_cpu: int
    rlimit_mem: int
    rlimit_nproc: int
    script_log: str | None
    script_log_buffer: int
    script_log_length: int
    master_pid: int
    pass_trace: bool
    static_aliases: dict[str, str]  # URL prefix -> absolute directory
    health_path: str | None

    def at(self, prefix: str) -> Location:
        """The settings of the location a script was mapped through (its alias prefix)."""
        return self.locations.get(prefix, self.default)


def build_options(cfg: Any, sock_path: str) -> Options:
    def get(name: str) -> Any:
        return settings.cgi_setting(cfg, name)

    base = os.getcwd()  # gunicorn's chdir, applied before the fork
    master_pid = os.getppid()
    docroot = get("cgi_document_root")
    docroot = os.path.abspath(docroot) if docroot else None
    script_log = get("script_log")
    if script_log and script_log != "-":
        script_log = os.path.abspath(script_log)

    def limit(value: int | None) -> int:
        return -1 if value is None else int(value)

    default = Location(
        set_env=dict(get("cgi_env")),
        passed_env={name: os.environ[name] for name in get("cgi_pass_env") if name in os.environ},
        interpreters={ext.lower(): path for ext, path in get("cgi_interpreters").items()},
        timeout=float(get("cgi_timeout")),
        max_runtime=float(get("cgi_max_runtime")),
        limit_request_body=int(get("cgi_limit_request_body")),
        user=None, group=None, x_sendfile=(),
    )
    script_alias = get("script_alias")
    return Options(
        sock_path=sock_path,
        aliases=make_aliases(script_alias, base),
        document_root=docroot,
        docroot_env=docroot or base,
        extensions=list(get("cgi_extensions")) + [ext.lower() for ext in get("cgi_interpreters")],
        accept_path_info=bool(get("cgi_accept_path_info")),
        follow_symlinks=bool(get("cgi_follow_symlinks")),
        default=default,
        locations={prefix: location(default, entry) for prefix, entry in script_alias.items()
                   if isinstance(entry, dict)},
        kill_grace=float(get("cgi_kill_grace")),
        max_scripts=int(get("cgi_max_scripts")),
        queue_timeout=float(get("cgi_queue_timeout")),
        path=get("cgi_path"),
        pass_auth=bool(get("cgi_pass_auth")),
        rlimit_cpu=limit(get("cgi_rlimit_cpu")),
        rlimit_mem=limit(get("cgi_rlimit_mem")),
        rlimit_nproc=limit(get("cgi_rlimit_nproc")),
        script_log=script_log,
        script_log_buffer=int(get("script_log_buffer")),
        script_log_length=int(get("script_log_length")),
        master_pid=master_pid,
        pass_trace=bool(get("cgi_pass_trace")),
        static_aliases={prefix: os.path.join(base, path) for prefix, path in get("static_alias").items()},
        health_path=get("health_path"),
    )


def location(default: Location, entry: dict[str, Any]) -> Location:
    """One per-location entry (already checked by ``locations.normalize``) over the global settings."""
    passed = {name: os.environ[name] for name in entry.get("pass_env", ()) if name in os.environ}
    return Location(
        set_env={**default.set_env, **entry.get("env", {})},
        passed_env={**default.passed_env, **passed},
        interpreters={**default.interpreters, **entry.get("interpreters", {})},
        timeout=float(entry.get("timeout", default.timeout)),
        max_runtime=float(entry.get("max_runtime", default.max_runtime)),
        limit_request_body=int(entry.get("limit_request_body", default.limit_request_body)),
        user=entry.get("user"), group=entry.get("group"),
        x_sendfile=tuple(entry.get("x_sendfile", ())),
    )
