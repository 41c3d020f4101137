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
class Options:
    sock_path: str
    aliases: list[Alias]
    document_root: str | None      # handler-style root (cgi_document_root), or None
    docroot_env: str               # DOCUMENT_ROOT for scripts
    extensions: list[str]          # cgi_extensions plus the interpreters' extensions
    interpreters: dict[str, str]
    accept_path_info: bool
    follow_symlinks: bool
    timeout: float
    max_runtime: float
    kill_grace: float
    max_scripts: int
    queue_timeout: float
    set_env: dict[str, str]
    passed_env: dict[str, str]
    path: str
    pass_auth: bool
    rlimit_cpu: int
    rlimit_mem: int
    rlimit_nproc: int
    script_log: str | None
    script_log_buffer: int
    script_log_length: int
    master_pid: int
    limit_request_body: int        # bytes, 0 for unlimited
    pass_trace: bool


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

    return Options(
        sock_path=sock_path,
        aliases=make_aliases(get("script_alias"), base),
        document_root=docroot,
        docroot_env=docroot or base,
        extensions=list(get("cgi_extensions")) + [ext.lower() for ext in get("cgi_interpreters")],
        interpreters={ext.lower(): path for ext, path in get("cgi_interpreters").items()},
        accept_path_info=bool(get("cgi_accept_path_info")),
        follow_symlinks=bool(get("cgi_follow_symlinks")),
        timeout=float(get("cgi_timeout")),
        max_runtime=float(get("cgi_max_runtime")),
        kill_grace=float(get("cgi_kill_grace")),
        max_scripts=int(get("cgi_max_scripts")),
        queue_timeout=float(get("cgi_queue_timeout")),
        set_env=dict(get("cgi_env")),
        passed_env={name: os.environ[name] for name in get("cgi_pass_env") if name in os.environ},
        path=get("cgi_path"),
        pass_auth=bool(get("cgi_pass_auth")),
        rlimit_cpu=limit(get("cgi_rlimit_cpu")),
        rlimit_mem=limit(get("cgi_rlimit_mem")),
        rlimit_nproc=limit(get("cgi_rlimit_nproc")),
        script_log=script_log,
        script_log_buffer=int(get("script_log_buffer")),
        script_log_length=int(get("script_log_length")),
        master_pid=master_pid,
        limit_request_body=int(get("cgi_limit_request_body")),
        pass_trace=bool(get("cgi_pass_trace")),
    )
