"""What one worker knows of its server: its CGI options, its logger, the ScriptSock.

Built once per worker by the ``post_fork`` hook, which hands over the socket
path the master chose (the only source of that path). Worker modules read it
from here and never import the master's code, so the worker side can be read,
and tested, on its own.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gunicorn_cgid.worker.options import Options, build_options

if TYPE_CHECKING:
    from gunicorn_cgid.worker.static import StaticFiles


@dataclass
class WorkerContext:
    options: Options
    log: Any  # gunicorn's logger of this worker (statsd-capable when statsd_host is set)
    _files: StaticFiles | None = None

    @property
    def files(self) -> StaticFiles:
        """The static_alias directories and X-Sendfile answers.

        Made at the first use, or in ``install`` when the configuration has
        either: the file server (servestatic, and the asyncio it imports)
        costs a few MiB per worker that a server of scripts alone never needs.
        """
        if self._files is None:
            from gunicorn_cgid.worker.static import StaticFiles
            self._files = StaticFiles(self.options.static_aliases)
        return self._files


_current: WorkerContext | None = None


def install(cfg: Any, log: Any, sock_path: str) -> WorkerContext:
    """Called once in each worker, right after the fork."""
    global _current
    options = build_options(cfg, sock_path)
    _current = WorkerContext(options, log)
    sendfile = options.default.x_sendfile or any(loc.x_sendfile for loc in options.locations.values())
    if options.static_aliases or sendfile:
        _current.files  # noqa: B018 - made now, not during a request
    return _current


def current() -> WorkerContext | None:
    """This worker's context; None when the hooks were not installed in the config file."""
    return _current


# The request headers as they arrived, handed over by the ``pre_request``
# hook, which gunicorn runs in the thread (or greenlet) that then runs the
# app, on HTTP/1 and HTTP/2 alike. Created at the first request, after gevent
# has patched ``threading``, so that under gevent it is greenlet-local.
_request_local: Any = None


def remember_request(req: Any) -> None:
    """``pre_request``: keep this request's header list (arrival order, repeats not joined)."""
    global _request_local
    if _request_local is None:
        _request_local = threading.local()
    headers = getattr(req, "headers", None)
    _request_local.headers = headers if isinstance(headers, list) else None


def request_headers() -> list[tuple[str, str]] | None:
    """The current request's headers as they arrived; None without the ``pre_request`` hook."""
    local = _request_local
    headers = getattr(local, "headers", None) if local is not None else None
    if headers is None:
        return None
    return [(str(name), str(value)) for name, value in headers]
