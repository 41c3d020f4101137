"""The end of a request: exit accounting, error-log lines, ScriptLog records, metrics.

Runs in the worker. Whatever way a request ended (a good response, a
refusal, a script failure, a client that left, a cut response), ``finish``
runs once for it and writes what the logs must say; ``account`` runs once per
script run (an internal redirect runs two scripts for one request).
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from gunicorn_cgid import logsafe, scriptlog, wire
from gunicorn_cgid.environ import headers_from_wsgi
from gunicorn_cgid.errors import CGIError
from gunicorn_cgid.worker import metrics
from gunicorn_cgid.worker.request import Request

if TYPE_CHECKING:
    from gunicorn_cgid.worker.script import ScriptRun

log = logging.getLogger("gunicorn.error")

_REASONS = {
    wire.REASON_KILLED: "killed by the gateway",
    wire.REASON_MAX_RUNTIME: "cgi_max_runtime passed",
    wire.REASON_SHUTDOWN: "the CGI daemon stopped",
    wire.REASON_DISCONNECT: "its worker connection closed",
}


def finish(req: Request, run: ScriptRun | None, err: CGIError | None, progress: str = "") -> None:
    """End the request's script and log how the request ended; runs once per request.

    ``progress`` says how far the response got (for a client that left).
    """
    if req.finished:
        return
    req.finished = True
    if err is not None:
        report(req, run, err, progress)  # the cause first, as Apache logs it
    if run is not None:
        if err is not None and err.full_record and req.opts.script_log:
            # ScriptLog's full record shows what the script printed after the
            # bad line, as Apache reads it before logging.
            run.capture_rest()
        # A script we kill because the request failed is not a second
        # failure: its exit is accounted for, not logged again.
        run.end(wire.REASON_KILLED, log_exit=err is None)
    if err is not None and err.level != "info" and err.script_log and req.opts.script_log:
        _scriptlog(req, run, err)


def report(req: Request, run: ScriptRun | None, err: CGIError, progress: str = "") -> None:
    """The one error-log line of a failure; request-controlled text is escaped."""
    if run is not None:
        run.status_for_log = err.status
    if err.level == "info":
        script = run.filename if run is not None else (err.filename or req.path)
        log.info("[client %s] %s (%s%s)", req.client, logsafe.escape(err.log_line), logsafe.escape(script),
                 ", " + progress if progress else "")
        return
    getattr(log, err.level)("[client %s] %s", req.client, logsafe.escape(err.log_line))


def _scriptlog(req: Request, run: ScriptRun | None, err: CGIError) -> None:
    if err.full_record and run is not None:
        _scriptlog_full(req, run, err.status)
    else:
        filename = (run.filename if run is not None else None) or err.filename or req.path
        scriptlog_error(req, err.status, err.message, filename)


def account(req: Request, filename: str, pid: int, exited: wire.Exited, log_exit: bool = True) -> None:
    """The script's exit into the WSGI environ (for the access log), metrics and the error log.

    Beyond Apache, which logs nothing of a script's exit: a non-zero status or
    a signal is one warning line, except a kill by the gateway after a failure
    already logged as its cause (``log_exit`` False).
    """
    status = exited.wait_status
    environ = req.environ
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
    if (log_exit or exited.reason == wire.REASON_NONE) and (code != 0 or exited.reason):
        why = _REASONS.get(exited.reason, "")
        log.warning("[client %s] CGI script %s (pid %d) %s%s [%s]", req.client, logsafe.escape(filename), pid,
                    "exited with status %d" % code if code is not None else "killed by signal %d" % sig,
                    " (%s)" % why if why else "", logsafe.escape(req.line))


def was_cut(exited: wire.Exited | None) -> bool:
    """Whether the script was killed, so its output may have stopped in the middle."""
    if exited is None:
        return False
    return exited.reason in (wire.REASON_MAX_RUNTIME, wire.REASON_SHUTDOWN, wire.REASON_DISCONNECT) or (
        exited.reason == wire.REASON_NONE and os.WIFSIGNALED(exited.wait_status))


def stderr_line(req: Request, filename: str, line: bytes, status: int) -> None:
    """A line the script wrote to stderr: to the error log at once, and to ScriptLog."""
    log.error("[client %s] AH01215: stderr from %s: %s", req.client, logsafe.escape(filename), logsafe.escape(line))
    if req.opts.script_log:
        scriptlog_error(req, status, line, filename)


def scriptlog_error(req: Request, status: int, message: str | bytes, filename: str) -> None:
    record = scriptlog.format_error(req.method, req.path, req.query, req.environ.get("SERVER_PROTOCOL", ""),
                                    status, filename, message, time.time())
    scriptlog.append(req.opts.script_log or "-", req.opts.script_log_length, record)


def _scriptlog_full(req: Request, run: ScriptRun, status: int) -> None:
    headers = req.raw_headers() or headers_from_wsgi(req.environ)
    lines = [ln.decode("latin-1") for ln in run.parser.lines]
    # As Apache: the script's headers count only once the block is
    # complete, so %response shows just the line that broke it; and
    # stderr lines were each logged as they came, so %stderr stays empty.
    record = scriptlog.format_full(
        req.method, req.path, req.query, req.environ.get("SERVER_PROTOCOL", ""), status,
        run.filename, [(n.title(), v) for n, v in headers], run.body_head,
        [], lines[-1] if lines else "", _stdout_after_headers(run), b"", time.time())
    scriptlog.append(req.opts.script_log or "-", req.opts.script_log_length, record)


def _stdout_after_headers(run: ScriptRun) -> bytes:
    raw = bytes(run.stdout_seen)
    pos = 0
    for _ in run.parser.lines:
        nl = raw.find(b"\n", pos)
        pos = len(raw) if nl < 0 else nl + 1
    return raw[pos:]
