"""Typed failures of the CGI gateway, each carrying its HTTP status and log line.

Used by the worker (and the pure parsers it calls). Exactly one place, the
WSGI app, turns a ``CGIError`` into a response, so no path returns without
a status.
"""

from __future__ import annotations


class CGIError(Exception):
    """A request that cannot be answered by the script.

    ``status`` is the HTTP status sent to the client, ``message`` the
    single log line (it names the script and quotes bad input with ``!r``),
    and ``headers`` any extra response headers (``Retry-After``...).
    ``full_record`` says whether ScriptLog gets the full record (the script's
    output could not be used) or the short ``%error`` one (a refusal).
    """

    status: int = 500
    full_record: bool = False

    def __init__(self, message: str, *, status: int | None = None,
                 headers: list[tuple[str, str]] | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.headers = headers or []
        self.filename = filename  # the file the URL mapped to, when known (ScriptLog names it)


class NotFound(CGIError):
    """No script at the mapped path (Apache AH01264)."""
    status = 404


class Forbidden(CGIError):
    """A directory, a non-executable file, or a path leaving the tree."""
    status = 403


class BadRequest(CGIError):
    """The request itself cannot be mapped (dot segments above the root)."""
    status = 400


class ScriptHeaderError(CGIError):
    """The script's header block is unusable: malformed, too long, or missing."""
    status = 500
    full_record = True


class BadGateway(CGIError):
    """The script answered with something we refuse to relay (RFC 9110 §15.6.3)."""
    status = 502
    full_record = True


class ScriptTimeout(CGIError):
    """No output within ``cgi_timeout`` (or past ``cgi_max_runtime``) before the headers."""
    status = 504
    full_record = True


class SpawnError(CGIError):
    """The daemon could not start the script (exec failure: bad interpreter line...)."""
    status = 500


class DaemonUnavailable(CGIError):
    """The CGI daemon cannot be reached, or it went away mid-request."""
    status = 503


class Busy(CGIError):
    """``cgi_max_scripts`` scripts are running and the queue wait ran out."""
    status = 503
