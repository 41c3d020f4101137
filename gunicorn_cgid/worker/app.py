"""The WSGI app: one request, top to bottom, and the one place where failures are answered.

Runs in the worker (gthread, gevent or sync). The stages, in order:

0. **admit**: refuse what no script may see (``admission``);
1. **map** the URL to a script (``mapping``);
2. **build** its CGI environment and spawn request (``environ``, ``wire``);
3. **send** it to the daemon and stream the body in (``script``, ``client``, ``stream``);
4. **read** the script's header block (``headers``);
5. **decide** the response (``reply``): an internal redirect goes back to 1;
6. **relay** the body to the client;
7. **finish**: exit status, accounting and log records, once (``ending``).

Every failure is a ``CGIError`` (``errors``), raised where it is found and
answered in ``_failed``: an error page before the response headers, a cut
response after them.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from gunicorn_cgid import __version__, admission, wire
from gunicorn_cgid.environ import EnvOptions, build_argv, build_environ, redirect_environ, to_wire
from gunicorn_cgid.errors import CGIError, ClientGone, Forbidden, ResponseCut, ScriptCut
from gunicorn_cgid.mapping import ScriptTarget, map_request
from gunicorn_cgid.worker import context, ending, health, metrics, nph
from gunicorn_cgid.worker.options import Options
from gunicorn_cgid.worker.reply import DISCARD, REPLACE, SENDFILE, STREAM, Redirect, Reply, decide, error_page
from gunicorn_cgid.worker.request import Request
from gunicorn_cgid.worker.script import ScriptRun
from gunicorn_cgid.worker.stream import IdleTimeout, paced

log = logging.getLogger("gunicorn.error")

MAX_REDIRECTS = 10
# A body that ends within this size and time of its headers is sent in one
# piece with Content-Length (as Apache does when the whole body is at hand);
# a slower one is streamed, its first bytes delayed by at most the wait.
SHORT_BODY_MAX = 65536
SHORT_BODY_WAIT_SECONDS = 0.005

StartResponse = Callable[..., Any]


def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The WSGI entry point, ``gunicorn_cgid:app``."""
    ctx = context.current()
    if ctx is None:
        log.error("gunicorn_cgid: the CGI daemon was not started: add "
                  "'from gunicorn_cgid.hooks import *' to gunicorn.conf.py")
        return _send(start_response, error_page(503))
    if ctx.options.health_path is not None and environ.get("PATH_INFO") == ctx.options.health_path:
        return _health(ctx.options, start_response)
    if ctx.options.static_aliases:
        answer = ctx.files(environ, start_response)
        if answer is not None:
            return answer
    req = Request.from_environ(environ, ctx.options)
    run: ScriptRun | None = None
    try:
        admit(req)                                                   # 0. admit
        for _hop in range(MAX_REDIRECTS + 1):
            target = map_script(req)                                 # 1. map
            run = ScriptRun(req, target, build_env(req, target))     # 2. build
            run.start(spawn_request(req, run))                       # 3. send
            if target.nph and not req.shared_socket:
                return _relay_nph(req, run, start_response)
            head = run.read_head(nph=target.nph)                     # 4. read
            reply = decide(head, req.method, environ, time.time(),   # 5. decide
                           sendfile=bool(run.loc.x_sendfile))
            if isinstance(reply, Redirect):
                run.end(wire.REASON_KILLED, drain=True)
                req = req.redirected(reply.location, run.env)
                run = None
                continue
            if reply.mode == SENDFILE:
                path = sendfile_path(run, reply.body.decode("latin-1"))
                run.end(wire.REASON_KILLED, drain=True)
                ending.finish(req, run, None)
                return ctx.files.send_file(environ, start_response, path, reply.status, reply.headers)
            run.status_for_log = int(reply.status[:3])
            first, whole = run.parser.rest, False
            if reply.mode == STREAM:
                first, whole = run.read_ahead(first, SHORT_BODY_MAX, SHORT_BODY_WAIT_SECONDS)
                if whole and not ending.was_cut(run.end(wire.REASON_NONE)):
                    # The whole body is here: one piece with its length.
                    start_response(reply.status, reply.headers + [("Content-Length", str(len(first)))])
                    return _whole(req, run, first)                    # 6. relay, 7. finish
            start_response(reply.status, reply.headers)
            return _relay(req, run, reply, first)                     # 6. relay, 7. finish
        raise CGIError("CGI internal redirect loop: more than %d redirects for %r"
                       % (MAX_REDIRECTS, environ.get("RAW_URI", req.path)))
    except CGIError as err:
        return _failed(req, run, err, start_response)


# -- 0. admit ---------------------------------------------------------------------

def admit(req: Request) -> None:
    """Refuse, before anything runs, what no script may see (TRACE, a bad Host, a bad length).

    The body's size is checked against its location's limit once mapped.
    """
    environ = req.environ
    admission.check(req.method, environ.get("SERVER_PROTOCOL", ""), environ.get("HTTP_HOST"),
                    _declared_length(environ), 0, req.opts.pass_trace)


def _declared_length(environ: dict[str, Any]) -> str | None:
    if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return None
    return environ.get("CONTENT_LENGTH") or None


# -- 1. map -----------------------------------------------------------------------

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


def map_script(req: Request) -> ScriptTarget:
    """The script the URL names, checked to be runnable by us; raises NotFound, Forbidden..."""
    opts = req.opts
    probe = _LinkProbe()
    target = map_request(req.path, req.raw_path, opts.aliases, opts.document_root, opts.extensions,
                         opts.accept_path_info, opts.follow_symlinks, stat=probe.stat, realpath=probe.realpath)
    if req.previous is None:
        admission.check_length(_declared_length(req.environ), opts.at(target.context_prefix).limit_request_body)
    if _interpreter(req, target) is not None:
        if not os.access(target.filename, os.R_OK):
            raise Forbidden("file permissions deny server access: %s" % target.filename,
                            filename=target.filename)
    elif not os.access(target.filename, os.X_OK):
        # Deviation from Apache: mod_cgid answers 500 after a failed exec;
        # a script we can see is not executable is a permission problem.
        raise Forbidden("file permissions deny server execution: %s" % target.filename,
                        filename=target.filename)
    return target


def _interpreter(req: Request, target: ScriptTarget) -> str | None:
    interpreters = req.opts.at(target.context_prefix).interpreters
    return interpreters.get(os.path.splitext(target.filename)[1].lower())


# -- 2. build ------------------------------------------------------------------------

def build_env(req: Request, target: ScriptTarget) -> dict[str, str]:
    """The script's CGI/1.1 environment (RFC 3875 §4.1, with Apache's additions)."""
    environ = req.environ
    loc = req.opts.at(target.context_prefix)
    server_addr, server_port = _local_address(environ)
    opts = EnvOptions(
        document_root=req.opts.docroot_env,
        server_software="%s gunicorn-cgid/%s" % (environ.get("SERVER_SOFTWARE", "gunicorn"), __version__),
        server_addr=server_addr, server_port=server_port, path=req.opts.path,
        set_env=loc.set_env, passed_env=loc.passed_env, pass_auth=req.opts.pass_auth)
    view = environ
    if req.previous is not None:
        view = dict(environ, REQUEST_METHOD="GET", QUERY_STRING=req.query)
        view.pop("CONTENT_LENGTH", None)
        view.pop("CONTENT_TYPE", None)
    env = build_environ(view, target, opts, req.raw_headers())
    if req.previous is not None:
        env.pop("CONTENT_LENGTH", None)
        env.pop("CONTENT_TYPE", None)
        env.update(redirect_environ(req.previous, 200))
    if _interpreter(req, target) is not None:
        env.setdefault("REDIRECT_STATUS", "200")  # php-cgi's force-cgi-redirect check
    return env


def spawn_request(req: Request, run: ScriptRun) -> wire.SpawnRequest:
    """What the daemon needs to start the script: the program, its arguments, environment and location.

    The limits are the daemon's, looked up by the location (the alias
    prefix); the location's ``max_runtime`` is sent only as the most the
    script may get, which the daemon never lets exceed its own.
    """
    filename = run.filename
    interpreter = _interpreter(req, run.target)
    argv = [interpreter, filename] if interpreter is not None else build_argv(filename, req.query)
    return wire.SpawnRequest(
        filename=os.fsencode(argv[0]),
        cwd=os.fsencode(os.path.dirname(filename)),
        argv=tuple(a.encode("utf-8", "surrogateescape") for a in argv),
        env=to_wire(run.env),
        location=run.target.context_prefix,
        max_runtime_ms=int(run.loc.max_runtime * 1000),
        master_pid=req.opts.master_pid,
    )


def sendfile_path(run: ScriptRun, value: str) -> str:
    """The file an ``X-Sendfile`` answer names, if it lies in a directory its location allows."""
    real = os.path.realpath(value)
    for directory in run.loc.x_sendfile:
        root = os.path.realpath(directory)
        if os.path.commonpath([root, real]) == root and os.path.isfile(real):
            return real
    raise CGIError("X-Sendfile from %s names %r, which is not a file in an allowed directory (x_sendfile)"
                   % (run.filename, value), filename=run.filename)


# -- 6. relay ------------------------------------------------------------------------

def _relay(req: Request, run: ScriptRun, reply: Reply, first: bytes) -> Iterator[bytes]:
    """The response body, as the script writes it; finishes the request whatever happens."""
    err: CGIError | None = None
    client = req.environ.get("gunicorn.socket") if not req.shared_socket else None
    timeout = run.loc.timeout
    try:
        if first and reply.mode == STREAM:
            run.sent += len(first)
            yield first  # a fresh response: the socket has room for its first piece
        while True:
            chunk = run.read()
            if not chunk:
                break
            if reply.mode != STREAM:
                continue
            if client is None:
                run.sent += len(chunk)
                yield chunk
                continue
            for piece in paced(client, chunk, timeout):
                run.sent += len(piece)
                yield piece
        # EOF on stdout also comes from a kill (cgi_max_runtime): only the
        # exit report tells a complete body from a cut one, so wait for it
        # before the server writes the body's end.
        if ending.was_cut(run.end(wire.REASON_NONE)):
            raise ScriptCut("CGI script %s was killed before it finished its output: response cut"
                            % run.filename)
        if reply.mode == REPLACE:
            yield reply.body
    except CGIError as exc:
        _cut(req, run, exc)  # raises ResponseCut
    except GeneratorExit:
        # The server stopped iterating: the client is gone (a failed write).
        err = ClientGone("the client closed the connection")
        raise
    finally:
        ending.finish(req, run, err, progress="after %d bytes of the response body" % run.sent)


def _whole(req: Request, run: ScriptRun, body: bytes) -> Iterator[bytes]:
    """A body read whole before the headers were sent."""
    try:
        run.sent = len(body)
        yield body
    except GeneratorExit:
        ending.finish(req, run, ClientGone("the client closed the connection"), progress="with the whole body sent")
        raise
    finally:
        ending.finish(req, run, None)


def _relay_nph(req: Request, run: ScriptRun, start_response: StartResponse) -> Iterable[bytes]:
    """An NPH script over HTTP/1.x: its status line read here, then its output copied raw."""
    sock = req.environ.get("gunicorn.socket")
    try:
        first = run.read_line(nph.STATUS_LINE_MAX)
        if sock is None:
            raise CGIError("cannot pass NPH output through this server: %s" % run.filename)
    except CGIError as exc:
        return _failed(req, run, exc, start_response)
    start_response(nph.status_of(first), [])  # for the access log: gunicorn will write nothing
    return _finishing(req, run, nph.pump(run, sock, first, run.loc.timeout))


def _finishing(req: Request, run: ScriptRun, body: Iterator[bytes]) -> Iterator[bytes]:
    try:
        yield from body
    finally:
        ending.finish(req, run, None)


# -- failures: the one place they are answered ------------------------------------------

def _failed(req: Request, run: ScriptRun | None, err: CGIError, start_response: StartResponse) -> Iterable[bytes]:
    """A failure before the response headers: finish the request, then answer with a status."""
    ending.finish(req, run, err, progress="before the response headers")
    if isinstance(err, ClientGone):
        # Nobody to answer: the status reaches the access log only, and the
        # connection is closed without writing anything.
        start_response("499 Client Closed Request", [])
        return _cut_now(req, err)
    return _send(start_response, error_page(err.status, err.headers))


def _cut(req: Request, run: ScriptRun, err: CGIError) -> None:
    """A failure after the response headers: the client must see the response is incomplete."""
    if isinstance(err, IdleTimeout):
        metrics.timed_out()
        err.message, err.code, err.level = "Timeout waiting for output from CGI script %s" % run.filename, \
            "AH01220", "warning"
    ending.finish(req, run, err, progress="after %d bytes of the response body" % run.sent)
    raise _cut_error(req, err.message)


def _cut_now(req: Request, err: CGIError) -> Iterator[bytes]:
    raise _cut_error(req, err.message)
    yield b""  # a generator: the cut happens when the server iterates


def _cut_error(req: Request, why: str) -> Exception:
    """What to raise from the body iterator so that gunicorn ends the response as incomplete.

    HTTP/1: EPIPE (``ResponseCut``): the connection is closed without the
    final chunk, logged at debug level. HTTP/2: gunicorn resets a stream whose
    response is unfinished (RST_STREAM), and its stream error is the one it
    logs at debug level rather than with a traceback.
    """
    if req.shared_socket:
        try:
            from gunicorn.http2.errors import HTTP2StreamError
        except ImportError:  # a gunicorn without HTTP/2: nothing to reset
            return ResponseCut(why)
        return HTTP2StreamError(0, "response cut: %s" % why)
    return ResponseCut(why)


def _health(opts: Options, start_response: StartResponse) -> list[bytes]:
    ok, why = health.probe(opts.sock_path)
    if not ok:
        log.info("health check failed: %s", why)
    body = ("ok: %s\n" % why if ok else "unavailable: %s\n" % why).encode()
    start_response("200 OK" if ok else "503 Service Unavailable",
                   [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store")] + ([] if ok else [("Retry-After", "1")]))
    return [body]


def _send(start_response: StartResponse, reply: Reply) -> list[bytes]:
    start_response(reply.status, reply.headers)
    return [reply.body] if reply.mode != DISCARD else []


def _local_address(environ: dict[str, Any]) -> tuple[str, str]:
    sock = environ.get("gunicorn.socket")
    try:
        addr = sock.getsockname() if sock is not None else None
    except OSError:
        addr = None
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), str(addr[1])
    return str(environ.get("SERVER_NAME", "")), str(environ.get("SERVER_PORT", ""))
