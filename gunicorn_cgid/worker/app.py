"""The WSGI app: map the URL, start the script through the daemon, relay its answer.

Runs in the worker (gthread, gevent or sync). One ``except CGIError`` turns
every failure into a response; the pure modules decide (mapping, environment,
header parsing, conditionals) and ``stream`` moves the bytes.
"""

from __future__ import annotations

import html
import logging
import os
import socket
import stat as stat_mod
import time
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from gunicorn_cgid import __version__, conditional, scriptlog, wire
from gunicorn_cgid.environ import (
    EnvOptions,
    build_argv,
    build_environ,
    headers_from_wsgi,
    native,
    redirect_environ,
    to_wire,
)
from gunicorn_cgid.errors import CGIError, DaemonUnavailable, Forbidden, ScriptHeaderError, ScriptTimeout
from gunicorn_cgid.headers import Head, HeaderParser
from gunicorn_cgid.mapping import ScriptTarget, map_request
from gunicorn_cgid.worker import context, glue, metrics
from gunicorn_cgid.worker.client import start_script
from gunicorn_cgid.worker.options import Options
from gunicorn_cgid.worker.stream import ClientGone, DaemonLost, IdleTimeout, ScriptSession

log = logging.getLogger("gunicorn.error")

MAX_REDIRECTS = 10
SCRIPTLOG_STDOUT_MAX = 1024 * 1024
HEAD_EOF_EXIT_WAIT_SECONDS = 0.5
NPH_STATUS_LINE_MAX = 8192
EXIT_WAIT_EXTRA_SECONDS = 1.0

StartResponse = Callable[..., Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point, ``gunicorn_cgid:app``."""
    ctx = context.current()
    if ctx is None:
        log.error("gunicorn_cgid: the CGI daemon was not started: add "
                  "'from gunicorn_cgid.hooks import *' to gunicorn.conf.py")
        return _error_page(start_response, 503, [])
    opts = ctx.options
    path = native(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))
    raw_path = environ.get("RAW_URI", "").split("?", 1)[0]
    query = environ.get("QUERY_STRING", "")
    method = environ.get("REQUEST_METHOD", "GET")
    previous: dict[str, str] | None = None
    for _hop in range(MAX_REDIRECTS + 1):
        run = ScriptRun(environ, opts, path, raw_path, query, method, previous)
        try:
            result = run.start()
        except CGIError as err:
            run.report(err)
            return _error_page(start_response, err.status, err.headers)
        if isinstance(result, Redirect):
            previous = run.env
            raw_path, query, method = result.path, result.query, "GET"
            path = native(unquote(raw_path, encoding="latin-1"))
            continue
        return result.respond(start_response)
    log.error("CGI internal redirect loop: more than %d redirects for %r", MAX_REDIRECTS,
              environ.get("RAW_URI", path))
    return _error_page(start_response, 500, [])


class _LinkProbe:
    """stat and realpath for ``map_request`` that skip realpath when no symlink was walked.

    Paths reaching here are normalised (no "." or ".."), so without a
    symbolic link on the way the path is its own real path; realpath costs a
    dozen system calls and more Python on every request.
    """

    __slots__ = ("link",)

    def __init__(self) -> None:
        self.link = False

    def stat(self, path: str) -> os.stat_result:
        st = os.lstat(path)
        if stat_mod.S_ISLNK(st.st_mode):
            self.link = True
            st = os.stat(path)
        return st

    def realpath(self, path: str) -> str:
        return os.path.realpath(path) if self.link else path


class Redirect:
    """A local ``Location: /path`` from a script with no other status (Apache's internal redirect)."""

    def __init__(self, location: str) -> None:
        path, _, query = location.partition("?")
        self.path = path
        self.query = query


class ScriptRun:
    """One script execution for one (possibly redirected) request."""

    def __init__(self, environ: dict[str, Any], opts: Options, path: str, raw_path: str, query: str,
                 method: str, previous: dict[str, str] | None) -> None:
        self.environ = environ
        self.opts = opts
        self.path = path
        self.raw_path = raw_path
        self.query = query
        self.method = method
        self.previous = previous
        self.target: ScriptTarget | None = None
        self.env: dict[str, str] = {}
        self.session: ScriptSession | None = None
        self.parser = HeaderParser()
        self.stdout_seen = bytearray()  # unused output after a header failure, for ScriptLog
        self.status_for_log = 200       # the status ScriptLog records for stderr lines
        self._last_session: ScriptSession | None = None  # kept after end_script, for ScriptLog

    # -- start ---------------------------------------------------------------

    def start(self) -> Redirect | Response | NphResponse:
        opts = self.opts
        probe = _LinkProbe()
        self.target = target = map_request(
            self.path, self.raw_path, opts.aliases, opts.document_root, opts.extensions,
            opts.accept_path_info, opts.follow_symlinks, stat=probe.stat, realpath=probe.realpath)
        interpreter = opts.interpreters.get(os.path.splitext(target.filename)[1].lower())
        if interpreter is not None:
            if not os.access(target.filename, os.R_OK):
                raise Forbidden("file permissions deny server access: %s" % target.filename)
            argv = [interpreter, target.filename]
        elif not os.access(target.filename, os.X_OK):
            # Deviation from Apache: mod_cgid answers 500 after a failed exec;
            # a script we can see is not executable is a permission problem.
            raise Forbidden("file permissions deny server execution: %s" % target.filename)
        else:
            argv = build_argv(target.filename, self.query)
        self.env = self._build_env(target)
        if interpreter is not None:
            self.env.setdefault("REDIRECT_STATUS", "200")
        request = wire.SpawnRequest(
            filename=os.fsencode(argv[0]),
            cwd=os.fsencode(os.path.dirname(target.filename)),
            argv=tuple(a.encode("utf-8", "surrogateescape") for a in argv),
            env=to_wire(self.env),
            max_runtime_ms=int(opts.max_runtime * 1000),
            kill_grace_ms=int(opts.kill_grace * 1000),
            queue_timeout_ms=int(opts.queue_timeout * 1000),
            max_scripts=opts.max_scripts,
            rlimit_cpu=opts.rlimit_cpu, rlimit_mem=opts.rlimit_mem, rlimit_nproc=opts.rlimit_nproc,
            master_pid=opts.master_pid,
        )
        began = time.monotonic()
        channel = start_script(opts.sock_path, request, opts.queue_timeout)
        metrics.spawned((time.monotonic() - began) * 1000)
        self.environ["cgi.pid"] = str(channel.pid)
        self.session = session = ScriptSession(
            channel, opts.timeout, self._stderr_line, self.environ.get("gunicorn.socket"),
            keep_body=opts.script_log_buffer if opts.script_log else 0)
        try:
            session.send_body(*self._body())
            if target.nph:
                return NphResponse(self)
            head = self._read_head()
            return self._decide(head)
        except ScriptHeaderError:
            # ScriptLog's full record shows what the script printed after
            # the bad line, as Apache reads it before logging.
            self.end_script(wire.REASON_KILLED, capture=bool(opts.script_log))
            raise
        except BaseException:
            self.end_script(wire.REASON_KILLED)
            raise

    def _body(self) -> tuple[Any, int | None]:
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

    def _build_env(self, target: ScriptTarget) -> dict[str, str]:
        environ = self.environ
        server_addr, server_port = _local_address(environ)
        opts = EnvOptions(
            document_root=self.opts.docroot_env,
            server_software="%s gunicorn-cgid/%s" % (environ.get("SERVER_SOFTWARE", "gunicorn"), __version__),
            server_addr=server_addr, server_port=server_port, path=self.opts.path,
            set_env=self.opts.set_env, passed_env=self.opts.passed_env, pass_auth=self.opts.pass_auth)
        view = environ
        if self.previous is not None:
            view = dict(environ, REQUEST_METHOD="GET", QUERY_STRING=self.query)
            view.pop("CONTENT_LENGTH", None)
            view.pop("CONTENT_TYPE", None)
        env = build_environ(view, target, opts, glue.raw_headers(environ))
        if self.previous is not None:
            env.pop("CONTENT_LENGTH", None)
            env.pop("CONTENT_TYPE", None)
            env.update(redirect_environ(self.previous, 200))
        return env

    def _read_head(self) -> Head:
        session = self.session
        assert session is not None
        try:
            while True:
                data = session.read()
                if not data:
                    # Before blaming the script, see whether the daemon died
                    # under it (its kill also ends stdout): that is a 502.
                    session.finish(HEAD_EOF_EXIT_WAIT_SECONDS)
                    return self.parser.close()
                if self.opts.script_log and len(self.stdout_seen) < SCRIPTLOG_STDOUT_MAX:
                    self.stdout_seen += data
                head = self.parser.feed(data)
                if head is not None:
                    return head
        except IdleTimeout:
            metrics.timed_out()
            raise ScriptTimeout("Script timed out before returning headers: %s"
                                % os.path.basename(self.filename)) from None
        except DaemonLost as exc:
            raise DaemonUnavailable("%s; %s ended before its headers" % (exc, self.filename), status=502) from None
        except ScriptHeaderError as err:
            err.message = "%s: %s" % (err.message, os.path.basename(self.filename))
            raise

    def _decide(self, head: Head) -> Redirect | Response:
        if head.location and head.location.startswith("/") and head.status == 200:
            self.end_script(wire.REASON_KILLED, drain=True)
            return Redirect(head.location)
        status, reason, headers = head.status, head.reason, list(head.headers)
        mode = "stream"
        body = b""
        if head.location and head.status == 200:
            # Apache turns a non-local Location into a redirect with its own body.
            status, reason, mode = 302, "Found", "replace"
            href = html.escape(head.location, quote=True)
            body = ('<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
                    '<title>302 Found</title>\n</head><body>\n<h1>Found</h1>\n'
                    '<p>The document has moved <a href="%s">here</a>.</p>\n</body></html>\n' % href).encode()
            headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
            headers.append(("Content-Type", "text/html; charset=iso-8859-1"))
        elif not head.explicit_status and self.method in ("GET", "HEAD"):
            etag = _header(head.headers, "etag")
            modified = _header(head.headers, "last-modified")
            if etag or modified:
                verdict = conditional.evaluate(self.method, self.environ, etag, modified, time.time())
                if verdict is not None:
                    status, reason, mode = verdict, HTTPStatus(verdict).phrase, "discard"
        if self.method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            mode = "discard"
        return Response(self, "%d %s" % (status, reason), headers, mode, body)

    # -- end -----------------------------------------------------------------

    @property
    def filename(self) -> str:
        return self.target.filename if self.target else ""

    def end_script(self, reason: int, drain: bool = False, capture: bool = False) -> wire.Exited | None:
        """Make sure the script is gone and accounted for; idempotent.

        ``drain`` reads stdout to EOF first (an internal redirect discards it);
        ``capture`` keeps up to SCRIPTLOG_STDOUT_MAX of it, waiting at most a second.
        """
        session = self.session
        if session is None:
            return self._last_session.exited if self._last_session is not None else None
        self.session = None
        self._last_session = session
        try:
            if capture:
                session.idle_timeout = min(session.idle_timeout, 1.0)
            if drain or capture:
                try:
                    while True:
                        chunk = session.read()
                        if not chunk:
                            break
                        if capture and len(self.stdout_seen) < SCRIPTLOG_STDOUT_MAX:
                            self.stdout_seen += chunk
                except (IdleTimeout, ClientGone, DaemonLost):
                    pass
            exited = session.exited
            if exited is None and not session.stdout_open:
                try:
                    exited = session.finish(min(self.opts.timeout, 5.0))
                except (ClientGone, DaemonLost, IdleTimeout):
                    exited = session.exited
            if exited is None:
                exited = session.kill(reason, self.opts.kill_grace + EXIT_WAIT_EXTRA_SECONDS)
            if exited is None:
                log.error("CGI script %s (pid %d): no exit status from the daemon", self.filename, session.ch.pid)
            else:
                self._account(exited)
            if not session.wait_body(self.opts.timeout):
                log.info("client of %s still sending its body: closing the connection", self.filename)
                glue.cut_response(self.environ)
            if session.body_error:
                log.info("Error writing request body to script %s: %s", self.filename, session.body_error)
            return exited
        finally:
            session.close()

    def _account(self, exited: wire.Exited) -> None:
        status = exited.wait_status
        environ = self.environ
        if os.WIFSIGNALED(status):
            code, sig = None, os.WTERMSIG(status)
            environ["cgi.exit_status"] = "signal %d" % sig
            environ["cgi.signal"] = str(sig)
        else:
            code, sig = os.WEXITSTATUS(status), None
            environ["cgi.exit_status"] = str(code)
        environ["cgi.exit_code"] = "" if code is None else str(code)
        environ["cgi.wall_ms"] = "%.1f" % (exited.wall_us / 1000)
        environ["cgi.cpu_ms"] = "%.1f" % ((exited.utime_us + exited.stime_us) / 1000)
        environ["cgi.utime_ms"] = "%.1f" % (exited.utime_us / 1000)
        environ["cgi.stime_ms"] = "%.1f" % (exited.stime_us / 1000)
        environ["cgi.maxrss_kb"] = str(exited.maxrss_kb)
        metrics.exited("signal" if sig is not None else ("ok" if code == 0 else "error"),
                       exited.wall_us / 1000, bool(exited.reason))
        if code != 0 or exited.reason:
            why = _REASONS.get(exited.reason, "")
            log.error("CGI script %s (pid %d) %s%s [%s]", self.filename, int(environ.get("cgi.pid", 0)),
                      "exited with status %d" % code if code is not None else "killed by signal %d" % sig,
                      " (%s)" % why if why else "", self._request_line())

    def _request_line(self) -> str:
        e = self.environ
        return "%s %s client %s" % (self.method, e.get("RAW_URI", self.path), _client(e))

    def _stderr_line(self, line: bytes) -> None:
        text = line.decode("utf-8", "backslashreplace")
        log.error("[client %s] stderr from %s: %s", _client(self.environ), self.filename, text)
        if self.opts.script_log:
            self._write_scriptlog_error(self.status_for_log, text)

    # -- failures ------------------------------------------------------------

    def report(self, err: CGIError) -> None:
        """Log a failure once: the error log line and the ScriptLog record."""
        log.error("[client %s] %s", _client(self.environ), err.message)
        self.status_for_log = err.status
        if not self.opts.script_log:
            return
        if err.full_record:
            self._write_scriptlog_full(err.status)
        else:
            self._write_scriptlog_error(err.status, err.message, err.filename)

    def _write_scriptlog_error(self, status: int, message: str, filename: str | None = None) -> None:
        record = scriptlog.format_error(self.method, self.path, self.query,
                                        self.environ.get("SERVER_PROTOCOL", ""), status,
                                        self.filename or filename or self.path, message, time.time())
        scriptlog.append(self.opts.script_log or "-", self.opts.script_log_length, record)

    def _write_scriptlog_full(self, status: int) -> None:
        headers = glue.raw_headers(self.environ) or headers_from_wsgi(self.environ)
        session_body = b""
        if self._last_session is not None:
            session_body = bytes(self._last_session.body_head)
        lines = [ln.decode("latin-1") for ln in self.parser.lines]
        # As Apache: the script's headers count only once the block is
        # complete, so %response shows just the line that broke it; and
        # stderr lines were each logged as they came, so %stderr stays empty.
        record = scriptlog.format_full(
            self.method, self.path, self.query, self.environ.get("SERVER_PROTOCOL", ""), status,
            self.filename, [(n.title(), v) for n, v in headers], session_body,
            [], lines[-1] if lines else "", self._stdout_after_headers(), b"", time.time())
        scriptlog.append(self.opts.script_log or "-", self.opts.script_log_length, record)

    def _stdout_after_headers(self) -> bytes:
        raw = bytes(self.stdout_seen)
        pos = 0
        for _ in self.parser.lines:
            nl = raw.find(b"\n", pos)
            pos = len(raw) if nl < 0 else nl + 1
        return raw[pos:]


# Kills that can stop a script in the middle of its output.
_CUT_REASONS = (wire.REASON_MAX_RUNTIME, wire.REASON_SHUTDOWN, wire.REASON_DISCONNECT)

_REASONS = {
    wire.REASON_KILLED: "killed by the gateway",
    wire.REASON_MAX_RUNTIME: "cgi_max_runtime passed",
    wire.REASON_SHUTDOWN: "the CGI daemon stopped",
    wire.REASON_DISCONNECT: "its worker connection closed",
}


class Response:
    """A parsed CGI response, relayed as the WSGI response body."""

    def __init__(self, run: ScriptRun, status: str, headers: list[tuple[str, str]],
                 mode: str, body: bytes) -> None:
        self.run = run
        self.status = status
        self.headers = headers
        self.mode = mode  # "stream", "discard" (HEAD, 304...) or "replace" (our own body)
        self.body = body

    def respond(self, start_response: StartResponse) -> Iterable[bytes]:
        start_response(self.status, self.headers)
        self.run.status_for_log = int(self.status[:3])
        return self._relay()

    def _relay(self) -> Iterator[bytes]:
        run = self.run
        session = run.session
        assert session is not None
        reason = wire.REASON_KILLED
        try:
            first = run.parser.rest
            if first and self.mode == "stream":
                yield first
            while True:
                chunk = session.read()
                if not chunk:
                    break
                if self.mode == "stream":
                    yield chunk
            # EOF on stdout also comes from a kill (cgi_max_runtime): only the
            # exit report tells a complete body from a cut one, so wait for it
            # before the server writes the body's end.
            exited = run.end_script(wire.REASON_KILLED)
            if exited is not None and (exited.reason in _CUT_REASONS or (
                    exited.reason == wire.REASON_NONE and os.WIFSIGNALED(exited.wait_status))):
                log.error("CGI script %s was killed before it finished its output: response cut", run.filename)
                glue.cut_response(run.environ)
                return
            if self.mode == "replace":
                yield self.body
            reason = wire.REASON_NONE
        except IdleTimeout:
            metrics.timed_out()
            log.error("Timeout waiting for output from CGI script %s", run.filename)
            glue.cut_response(run.environ)
        except ClientGone:
            log.info("client %s went away; killing CGI script %s", _client(run.environ), run.filename)
        except DaemonLost as exc:
            log.error("%s while relaying %s: response cut", exc, run.filename)
            glue.cut_response(run.environ)
        finally:
            run.end_script(reason)


class NphResponse:
    """An ``nph-`` script: its output goes to the client untouched, then the connection closes."""

    def __init__(self, run: ScriptRun) -> None:
        self.run = run

    def respond(self, start_response: StartResponse) -> Iterable[bytes]:
        run = self.run
        session = run.session
        assert session is not None
        first = b""
        try:
            while b"\n" not in first and len(first) < NPH_STATUS_LINE_MAX:
                chunk = session.read()
                if not chunk:
                    break
                first += chunk
        except IdleTimeout:
            run.end_script(wire.REASON_KILLED)
            err = ScriptTimeout("Script timed out before returning headers: %s" % os.path.basename(run.filename))
            run.report(err)
            return _error_page(start_response, err.status, [])
        status = _nph_status(first)
        sock = glue.take_over_connection(run.environ, status)
        if sock is None:
            run.end_script(wire.REASON_KILLED)
            err = ScriptHeaderError("cannot pass NPH output through this server: %s" % run.filename)
            run.report(err)
            return _error_page(start_response, 500, [])
        return self._pump(sock, first)

    def _pump(self, sock: socket.socket, first: bytes) -> Iterator[bytes]:
        run = self.run
        session = run.session
        assert session is not None
        reason = wire.REASON_KILLED
        sent = 0
        try:
            chunk = first
            while chunk:
                # Raw means raw: a HEAD gets what the script wrote, as in Apache.
                sock.sendall(chunk)
                sent += len(chunk)
                chunk = session.read()
            reason = wire.REASON_NONE
        except (IdleTimeout, ClientGone, DaemonLost, OSError) as exc:
            log.info("NPH script %s ended early: %s", run.filename, exc.__class__.__name__)
        finally:
            resp = glue.gunicorn_response(run.environ)
            if resp is not None:
                resp.sent = sent
            run.end_script(reason)
        return
        yield b""  # a generator, so that the WSGI server drives it


def _nph_status(first: bytes) -> str:
    line = first.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    parts = line.split(None, 1)
    if len(parts) == 2 and parts[0].startswith("HTTP/") and parts[1][:3].isdigit():
        return parts[1]
    return "200 OK"


def _header(headers: list[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _client(environ: dict[str, Any]) -> str:
    addr = environ.get("REMOTE_ADDR", "-")
    port = environ.get("REMOTE_PORT")
    return "%s:%s" % (addr, port) if port else str(addr)


def _local_address(environ: dict[str, Any]) -> tuple[str, str]:
    sock = environ.get("gunicorn.socket")
    try:
        addr = sock.getsockname() if sock is not None else None
    except OSError:
        addr = None
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), str(addr[1])
    return str(environ.get("SERVER_NAME", "")), str(environ.get("SERVER_PORT", ""))


def _error_page(start_response: StartResponse, status: int, headers: list[tuple[str, str]]) -> list[bytes]:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body = ('<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n<title>%d %s</title>\n'
            '</head><body>\n<h1>%s</h1>\n</body></html>\n' % (status, phrase, phrase)).encode()
    start_response("%d %s" % (status, phrase),
                   [("Content-Type", "text/html; charset=iso-8859-1"),
                    ("Content-Length", str(len(body)))] + list(headers))
    return [body]
