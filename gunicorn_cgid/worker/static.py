"""Static files beside the CGI scripts (Apache's Alias), and X-Sendfile answers.

Runs in the worker. The files are served by ServeStatic, WhiteNoise's maintained
fork with the same API, because WhiteNoise 6.12 answers 416 to one-byte ranges
(evansd/whitenoise#711, Safari's ``bytes=0-0`` probe), follows symbolic links
out of its root and sends gzip to a client that refused it with ``q=0``.

ServeStatic gives the type, validators, ``HEAD``, ``Range`` (206, 416), the
``.gz``/``.br``/``.zstd`` variants and the file streaming. This module keeps
Apache's answers around it: the URL is normalised like a script's (dot
segments, merged slashes, an encoded slash is 404), a directory is 403 (no
listings: ``Options -Indexes``), a link leading out of the directory is 403,
other methods are 405 with ``Allow``, and the preconditions are those of
scripts (``conditional``, RFC 9110 §13.2.2) plus ``If-Range``, which
ServeStatic ignores (a resumed download could splice two versions).

It runs with ``autorefresh``: each request looks at the disk (about 15 system
calls, 0.1 ms), so files created or changed after start-up are served as they
are now; a scan at start-up would miss new files and send stale lengths.
"""

from __future__ import annotations

import calendar
import errno
import logging
import mimetypes
import os
import re
import stat as stat_mod
import time
from collections.abc import Callable, Iterable
from email.utils import formatdate, parsedate
from typing import Any
from wsgiref.headers import Headers

from servestatic import ServeStatic
from servestatic.media_types import default_types
from servestatic.responders import MissingFileError, NotARegularFileError, StaticFile
from servestatic.wsgi import FileServerWSGI

from gunicorn_cgid import admission, conditional, logsafe
from gunicorn_cgid.environ import native
from gunicorn_cgid.errors import CGIError
from gunicorn_cgid.mapping import normalize_path
from gunicorn_cgid.worker.reply import error_page

log = logging.getLogger("gunicorn.error")

StartResponse = Callable[..., Any]

ALLOW = "GET, HEAD"
_SLASHES = re.compile("//+")
# The script's own framing, which describes its (discarded) body, not the file.
_SCRIPT_FRAMING = frozenset(("content-length", "content-range", "transfer-encoding"))
# Request fields answered here, before ServeStatic sees the request.
_ANSWERED = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_MATCH", "HTTP_IF_UNMODIFIED_SINCE",
             "HTTP_IF_RANGE")


def _accept_ranges(headers: Headers, path: str, url: str) -> None:
    headers["Accept-Ranges"] = "bytes"


def system_types() -> dict[str, str]:
    """Types of the extensions ServeStatic's table lacks (.csv, .patch, .tar...), from mime.types as Apache.

    ServeStatic's own table (nginx's) stays first, so a type does not
    change with the host's /etc/mime.types; Python's built-in map fills in
    where that file is absent.
    """
    db = mimetypes.MimeTypes()
    for name in mimetypes.knownfiles:
        if os.path.isfile(name):
            db.read(name)
    known = default_types()
    return {ext: kind for ext, kind in db.types_map[True].items() if ext not in known}


def _server(types: dict[str, str], root: str | None = None, prefix: str | None = None) -> ServeStatic:
    """A ServeStatic that adds no caching policy and no CORS header, as Apache's Alias."""
    server = ServeStatic(None, autorefresh=True, max_age=None, allow_all_origins=False, mimetypes=types,
                         immutable_file_test=lambda path, url: False, add_headers_function=_accept_ranges)
    if root is not None:
        server.add_files(root, prefix)
    return server


class StaticFiles:
    """Serves ``static_alias`` directories; built once per worker."""

    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = aliases
        self._prefixes = tuple(aliases)
        types = system_types()
        # Longest prefix first: "/s/img/" wins over "/s/" for its own URLs.
        self._sites = [(prefix, os.path.realpath(aliases[prefix]), _server(types, aliases[prefix], prefix))
                       for prefix in sorted(aliases, key=len, reverse=True)]
        self._types = _server(types)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes] | None:
        """The response for a URL under a static prefix; None when no prefix matches."""
        path = environ.get("PATH_INFO", "")
        script_name = environ.get("SCRIPT_NAME")
        if script_name:
            path = script_name + path
        # Runs on every request: a prefix test, and two substring tests for a
        # path that only normalisation can bring under a prefix ("/x/../s/").
        if not path.startswith(self._prefixes) and "/." not in path and "//" not in path:
            return None
        found = self.route(path)
        if found is None:
            return None  # the CGI side maps it, and refuses it alike
        prefix, root, server, url = found
        method = environ.get("REQUEST_METHOD", "GET")
        raw = environ.get("RAW_URI", "").split("?", 1)[0]
        if "%2f" in raw.lower():
            return self._refuse(environ, start_response, 404, "AH00026: found %%2f (encoded '/') in URI path "
                                "(%s), returning 404" % raw)
        host = environ.get("HTTP_HOST")
        if (host is None and environ.get("SERVER_PROTOCOL") == "HTTP/1.1") or \
                (host is not None and not admission.valid_host(host)):
            return self._refuse(environ, start_response, 400, "client sent a bad or missing Host header: %r" % host)
        if method not in ("GET", "HEAD"):
            return self._refuse(environ, start_response, 405, "method %s not allowed for a static file %s"
                                % (method, url), [("Allow", ALLOW)])
        try:
            static_file = server.find_file(url)
        except NotARegularFileError:
            static_file = None
        except OSError as exc:
            return self._refuse(environ, start_response, 403, "cannot serve %s: %s" % (url, exc.strerror))
        if not isinstance(static_file, StaticFile):
            return self._not_served(environ, start_response, root, os.path.join(root, url[len(prefix):]))
        return self._serve(environ, start_response, static_file, None)

    def route(self, path: str) -> tuple[str, str, ServeStatic, str] | None:
        """The alias serving a WSGI path: (prefix, real root, server, normalised URL); None if none does.

        Dot segments are resolved and repeated slashes merged, as Apache does
        before it maps a URL, so "/s/a/../b.css" is "/s/b.css" and "/s/../x"
        is not a static URL at all.
        """
        try:
            url = normalize_path(native(path))
        except CGIError:
            return None  # above the root, or a NUL: refused by the CGI side
        if "//" in url:
            url = _SLASHES.sub("/", url)
        for prefix, root, server in self._sites:
            if url.startswith(prefix):
                return prefix, root, server, url
        return None

    def send_file(self, environ: dict[str, Any], start_response: StartResponse, path: str,
                  status: str, headers: list[tuple[str, str]]) -> Iterable[bytes]:
        """Answer with the file at ``path`` (already checked to be allowed), for X-Sendfile.

        The script's headers stay (its Content-Type, ETag and Last-Modified
        too, so its validators decide 304); only its own framing goes.
        """
        given = Headers([(k, v) for k, v in headers if k.lower() not in _SCRIPT_FRAMING])
        if "Content-Type" not in given:
            self._types.add_mime_headers(given, path, path)
        _accept_ranges(given, path, path)
        try:
            static_file = StaticFile(path, given.items())
        except MissingFileError:  # gone since the caller's check
            return self._refuse(environ, start_response, 404, "X-Sendfile: cannot send %s: no such file" % path,
                                level="error")
        except (NotARegularFileError, OSError) as exc:
            return self._refuse(environ, start_response, 500, "X-Sendfile: cannot send %s: %s" % (path, exc),
                                level="error")
        return self._serve(environ, start_response, static_file, status)

    # -- answers -------------------------------------------------------------------

    def _serve(self, environ: dict[str, Any], start_response: StartResponse, static_file: StaticFile,
               status: str | None) -> Iterable[bytes]:
        """ServeStatic's answer, once the preconditions are decided here."""
        method = environ.get("REQUEST_METHOD", "GET")
        modified = http_date(static_file.last_modified)
        verdict = conditional.evaluate(method, environ, static_file.etag, modified, time.time())
        if verdict == 304:
            start_response("304 Not Modified", list(static_file.not_modified_response.headers))
            return []
        if verdict is not None:
            return self._refuse(environ, start_response, verdict, None)
        view = {k: v for k, v in environ.items() if k not in _ANSWERED}
        if not range_applies(environ.get("HTTP_IF_RANGE"), static_file.etag, modified):
            view.pop("HTTP_RANGE", None)

        def started(line: str, response_headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status is not None and line.startswith("200 "):
                line = status  # X-Sendfile: the script's own status line
            return start_response(line, response_headers, exc_info)

        try:
            return FileServerWSGI(static_file)(view, started)
        except OSError as exc:  # the open, which ServeStatic does before it answers
            code = 404 if exc.errno in (errno.ENOENT, errno.ENOTDIR) else 403
            return self._refuse(environ, start_response, code, "AH00132: file permissions deny server access: "
                                "%s (%s)" % (exc.filename, exc.strerror))

    def _not_served(self, environ: dict[str, Any], start_response: StartResponse, root: str,
                    fs_path: str) -> Iterable[bytes]:
        """Why ServeStatic found no file at ``fs_path``: 404 when there is none, else Apache's 403."""
        status, message = refusal(root, fs_path)
        return self._refuse(environ, start_response, status, message)

    @staticmethod
    def _refuse(environ: dict[str, Any], start_response: StartResponse, status: int, message: str | None,
                headers: list[tuple[str, str]] | None = None, level: str = "info") -> Iterable[bytes]:
        """An Apache-shaped error page, and one error-log line (info: the client's doing)."""
        if message is not None:
            addr, port = environ.get("REMOTE_ADDR", "-"), environ.get("REMOTE_PORT")
            getattr(log, level)("[client %s] %s", "%s:%s" % (addr, port) if port else addr, logsafe.escape(message))
        reply = error_page(status, headers)
        start_response(reply.status, reply.headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [reply.body]


def refusal(root: str, fs_path: str) -> tuple[int, str]:
    """The status and log line for a path under ``root`` that is not served as a file.

    ``root`` is a real path. A directory is 403 (no listings), so is a link
    leading out of ``root`` and anything not a regular file; a missing path is 404.
    """
    try:
        st = os.stat(fs_path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return 404, "AH00128: File does not exist: %s" % fs_path
        return 403, "cannot serve %s: %s" % (fs_path, exc.strerror)
    real = os.path.realpath(fs_path)
    if real != root and os.path.commonpath([root, real]) != root:
        return 403, "AH00037: Symbolic link not allowed or link target not accessible: %s" % fs_path
    if stat_mod.S_ISDIR(st.st_mode):
        return 403, ("AH01276: Cannot serve directory %s: No matching DirectoryIndex (none) found, and "
                     "server-generated directory index forbidden by Options directive" % fs_path)
    if stat_mod.S_ISREG(st.st_mode):
        # ServeStatic hides a compressed variant (x.css.gz beside x.css) as a URL of its own.
        return 404, "AH00128: File does not exist: %s (a compressed variant)" % fs_path
    return 403, "cannot serve %s: not a regular file" % fs_path


def http_date(parsed: tuple[int, ...] | None) -> str | None:
    """An HTTP-date from ``email.utils.parsedate``'s tuple (UTC), as ServeStatic keeps Last-Modified."""
    if parsed is None:
        return None
    return formatdate(calendar.timegm(parsed), usegmt=True)


def range_applies(if_range: str | None, etag: str | None, last_modified: str | None) -> bool:
    """Whether a Range may be honoured: no If-Range, or one naming the current file (RFC 9110 §13.1.5).

    An entity tag must match strongly (a weak tag never does); a date must
    equal Last-Modified. Otherwise the whole file is sent (200).
    """
    if if_range is None:
        return True
    value = if_range.strip()
    if value.startswith(('"', "W/")):
        return etag is not None and not value.startswith("W/") and not etag.startswith("W/") \
            and value == etag.strip()
    date = parsedate(value)
    return date is not None and last_modified is not None and date == parsedate(last_modified)
