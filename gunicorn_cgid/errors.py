"""Typed failures of the CGI gateway, each carrying its HTTP status and log line.

Used by the worker (and the pure parsers it calls). Every way a request can
fail is a ``CGIError``, raised wherever it is found (mapping, the daemon, the
script's streams, the client) and handled in one place, ``worker/app.py``:
before the response headers it becomes an error page, after them the
response is cut (``ResponseCut``) so the client sees it is incomplete.
"""

from __future__ import annotations

import errno


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
    level: str = "error"   # error-log level: "info" for what is the client's doing
    script_log: bool = True  # whether ScriptLog gets a record (Apache logs failed scripts, not clients)
    default_headers: tuple[tuple[str, str], ...] = ()

    def __init__(self, message: str, *, status: int | None = None,
                 headers: list[tuple[str, str]] | None = None, filename: str | None = None,
                 code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code  # Apache's message number (AH01264...), for lines Apache numbers
        if status is not None:
            self.status = status
        self.headers = list(headers) if headers is not None else list(self.default_headers)
        self.filename = filename  # the file the URL mapped to, when known (ScriptLog names it)

    @property
    def log_line(self) -> str:
        """The error-log text: Apache's log_scripterror shape when the line has a number."""
        if self.code and self.filename:
            return "%s: stderr from %s: %s" % (self.code, self.filename, self.message)
        return "%s: %s" % (self.code, self.message) if self.code else self.message


class ClientError(CGIError):
    """The client's fault (a bad, refused or abandoned request): one info line, no ScriptLog record."""
    status = 400
    level = "info"
    script_log = False


class NotFound(CGIError):
    """No script at the mapped path (Apache AH01264)."""
    status = 404


class Unmapped(NotFound):
    """No ``script_alias`` covers the URL: a plain 404 that never reached CGI.

    Apache's core logs this at info level and mod_cgid never sees it, so no
    ScriptLog record either (else any crawler fills the ScriptLog).
    """
    level = "info"
    script_log = False


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
    """The script neither wrote output nor read input for ``cgi_timeout`` seconds."""
    status = 504
    full_record = True


class ScriptCut(CGIError):
    """The script was killed (``cgi_max_runtime``, daemon stop) in the middle of its output."""
    status = 502


class ClientGone(ClientError):
    """The client reset its connection (or it failed) while its script ran.

    The status (nginx's 499) only ever reaches the access log.
    """
    status = 499


class RequestTimeout(ClientError):
    """The client stopped sending its request body for ``cgi_timeout`` seconds."""
    status = 408


class ClientStalled(ClientError):
    """The client stopped reading its response for ``cgi_timeout`` seconds."""
    status = 408


class DaemonLost(CGIError):
    """The daemon's connection closed (or sent garbage) before the script's exit was reported."""
    status = 502


class SpawnError(CGIError):
    """The daemon could not start the script (exec failure: bad interpreter line...)."""
    status = 500


class DaemonUnavailable(CGIError):
    """The CGI daemon cannot be reached, or refuses to start scripts now (stopping, failed)."""
    status = 503
    default_headers = (("Retry-After", "5"),)


class Busy(CGIError):
    """``cgi_max_scripts`` scripts are running and the queue wait ran out."""
    status = 503


class ResponseCut(BrokenPipeError):
    """Raised from the response iterator to end a response that cannot be finished.

    gunicorn's HTTP/1 workers treat EPIPE from the application as a closed
    connection: no final chunk is written, the connection is closed, the
    access log is still written, and nothing but a debug line is logged. So
    the client sees a truncated response as truncated. (Over HTTP/2 gunicorn
    resets the stream.)
    """

    def __init__(self, why: str) -> None:
        super().__init__(errno.EPIPE, "response cut: %s" % why)
