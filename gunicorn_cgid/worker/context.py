"""What one worker knows of its server: its CGI options, its logger, the ScriptSock.

Built once per worker by the ``post_fork`` hook, which hands over the socket
path the master chose (the only source of that path). Worker modules read it
from here and never import the master's code, so the worker side can be read,
and tested, on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gunicorn_cgid.worker.options import Options, build_options
from gunicorn_cgid.worker.static import StaticFiles


@dataclass(frozen=True)
class WorkerContext:
    options: Options
    log: Any  # gunicorn's logger of this worker (statsd-capable when statsd_host is set)
    files: StaticFiles  # static_alias directories and X-Sendfile answers


_current: WorkerContext | None = None


def install(cfg: Any, log: Any, sock_path: str) -> WorkerContext:
    """Called once in each worker, right after the fork."""
    global _current
    options = build_options(cfg, sock_path)
    _current = WorkerContext(options, log, StaticFiles(options.static_aliases))
    return _current


def current() -> WorkerContext | None:
    """This worker's context; None when the hooks were not installed in the config file."""
    return _current
