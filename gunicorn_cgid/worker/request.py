"""One client request as the gateway sees it, also after an internal redirect.

Runs in the worker. Holds what every stage reads (the URL, method, client,
options) and is replaced, not changed, by a redirect: the new request is a GET
of the ``Location`` path without the original body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from gunicorn_cgid.environ import native
from gunicorn_cgid.worker import context
from gunicorn_cgid.worker.options import Options


@dataclass
class Request:
    environ: dict[str, Any]
    opts: Options
    path: str                          # decoded URL path
    raw_path: str                      # as sent, still %-encoded
    query: str
    method: str
    previous: dict[str, str] | None = None  # the environment of the script that redirected here
    finished: bool = field(default=False)   # the ending ran (it runs once)

    @classmethod
    def from_environ(cls, environ: dict[str, Any], opts: Options) -> Request:
        return cls(environ, opts,
                   path=native(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")),
                   raw_path=environ.get("RAW_URI", "").split("?", 1)[0],
                   query=environ.get("QUERY_STRING", ""),
                   method=environ.get("REQUEST_METHOD", "GET"))

    def redirected(self, location: str, previous: dict[str, str]) -> Request:
        """The GET that Apache's internal redirect makes of a local ``Location``."""
        raw_path, _, query = location.partition("?")
        return Request(self.environ, self.opts, path=native(unquote(raw_path, encoding="latin-1")),
                       raw_path=raw_path, query=query, method="GET", previous=previous)

    def body(self) -> tuple[Any, int | None]:
        """The request body and its length (None: chunked, read to its end)."""
        if self.previous is not None:
            return None, 0  # a redirect is a GET without the original body
        environ = self.environ
        if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            return environ.get("wsgi.input"), None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        return environ.get("wsgi.input"), max(length, 0)

    @property
    def client(self) -> str:
        addr = self.environ.get("REMOTE_ADDR", "-")
        port = self.environ.get("REMOTE_PORT")
        return "%s:%s" % (addr, port) if port else str(addr)

    @property
    def line(self) -> str:
        """``GET /uri client 1.2.3.4:5`` for log lines."""
        return "%s %s client %s" % (self.method, self.environ.get("RAW_URI", self.path), self.client)

    @property
    def shared_socket(self) -> bool:
        """Whether the client's socket carries other requests at the same time (HTTP/2)."""
        return not str(self.environ.get("SERVER_PROTOCOL", "HTTP/1.1")).startswith("HTTP/1")

    def raw_headers(self) -> list[tuple[str, str]] | None:
        """The headers as they arrived (gunicorn joins repeats with "," in the environ)."""
        return context.request_headers()
