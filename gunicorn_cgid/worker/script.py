"""One script run: started through the daemon, its head read, its output read, ended.

Runs in the worker. ``ScriptRun.start`` maps nothing and decides nothing: it
is given the script and its environment, asks the daemon for a process wired
to our sockets and starts streaming the request body in. ``end`` makes sure
the process is gone and its exit accounted for, whichever way the run ended;
it is idempotent, so every path may call it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

from gunicorn_cgid import wire
from gunicorn_cgid.errors import ClientGone, DaemonLost, DaemonUnavailable, ScriptHeaderError, ScriptTimeout
from gunicorn_cgid.headers import Head, HeaderParser, parse_status_line, split_status_line
from gunicorn_cgid.mapping import ScriptTarget
from gunicorn_cgid.worker import ending, metrics
from gunicorn_cgid.worker.client import start_script
from gunicorn_cgid.worker.request import Request
from gunicorn_cgid.worker.stream import IdleTimeout, ScriptSession

log = logging.getLogger("gunicorn.error")

SCRIPTLOG_STDOUT_MAX = 1024 * 1024   # output kept for a ScriptLog record
CAPTURE_SECONDS = 1.0                # at most this long reading output for a ScriptLog record
DRAIN_MAX_BYTES = 1024 * 1024        # output discarded before a script that keeps writing is killed
HEAD_EOF_EXIT_WAIT_SECONDS = 0.5     # after EOF before the headers: did the daemon die?
EXIT_WAIT_EXTRA_SECONDS = 1.0        # beyond the kill grace, for the exit report
BODY_STOP_SECONDS = 5.0              # for the body helper to notice a shut-down client
STATUS_LINE_MAX = 8192               # an NPH script's status line


class ScriptRun:
    """A running script and everything read from it so far."""

    def __init__(self, req: Request, target: ScriptTarget, env: dict[str, str]) -> None:
        self.req = req
        self.target = target
        self.loc = req.opts.at(target.context_prefix)
        self.env = env
        self.session: ScriptSession | None = None
        self.parser = HeaderParser()
        self.stdout_seen = bytearray()   # output kept for ScriptLog's record
        self.status_for_log = 200        # the status ScriptLog records for stderr lines
        self.exited: wire.Exited | None = None
        self.ended = False
        self.sent = 0                    # body bytes handed to the server so far

    @property
    def filename(self) -> str:
        return self.target.filename

    # -- send ------------------------------------------------------------------

    def start(self, request: wire.SpawnRequest) -> None:
        """Spawn through the daemon and start the body; raises a CGIError if it cannot."""
        opts = self.req.opts
        began = time.monotonic()
        wsgi_input, length = self.req.body()
        channel = start_script(opts.sock_path, request, opts.queue_timeout,
                               body=length != 0 and wsgi_input is not None)
        metrics.spawned((time.monotonic() - began) * 1000)
        self.req.environ["cgi.pid"] = str(channel.pid)
        self.session = ScriptSession(
            channel, self.loc.timeout, self._stderr_line, self.req.environ.get("gunicorn.socket"),
            keep_body=opts.script_log_buffer if opts.script_log else 0,
            shared_client=self.req.shared_socket, body_limit=self.loc.limit_request_body)
        self.session.send_body(wsgi_input, length)

    # -- read --------------------------------------------------------------------

    def read(self) -> bytes:
        """The next piece of stdout, b"" at its end; raises CGIError subclasses."""
        assert self.session is not None
        data = self.session.read()
        if self.req.opts.script_log and len(self.stdout_seen) < SCRIPTLOG_STDOUT_MAX:
            self.stdout_seen += data
        return data

    def read_head(self, nph: bool = False) -> Head:
        """Read until the header block is complete (Apache's ap_scan_script_header_err).

        ``nph``: the output starts with an HTTP status line (an NPH script
        relayed as an ordinary response, over HTTP/2), which becomes the status.
        """
        name = os.path.basename(self.filename)
        try:
            status_line = None
            if nph:
                status_line, rest = split_status_line(self.read_line(STATUS_LINE_MAX))
                head = self.parser.feed(rest) if rest else None
                if head is not None:
                    return _with_status(head, status_line)
            while True:
                data = self.read()
                if not data:
                    # Before blaming the script, see whether the daemon died
                    # under it (its kill also ends stdout): that is a 502.
                    assert self.session is not None
                    self.session.finish(HEAD_EOF_EXIT_WAIT_SECONDS)
                    return _with_status(self.parser.close(), status_line)
                head = self.parser.feed(data)
                if head is not None:
                    return _with_status(head, status_line)
        except IdleTimeout:
            metrics.timed_out()
            raise ScriptTimeout("Script timed out before returning headers: %s" % name) from None
        except DaemonLost as exc:
            raise DaemonLost("%s; %s ended before its headers" % (exc.message, self.filename)) from None
        except ScriptHeaderError as err:
            if "from script:" in err.message:
                err.message = err.message.replace("from script:", "from script '%s':" % name, 1)
            else:
                err.message = "%s: %s" % (err.message, name)
            raise

    def read_ahead(self, first: bytes, limit: int, seconds: float) -> tuple[bytes, bool]:
        """The body so far, and whether it is all there: stdout ended within ``seconds`` and ``limit`` bytes."""
        assert self.session is not None
        data = bytearray(first)
        deadline = time.monotonic() + seconds
        while len(data) <= limit:
            chunk = self.session.read_for(max(0.0, deadline - time.monotonic()))
            if chunk is None:
                return bytes(data), False
            if not chunk:
                return bytes(data), True
            if self.req.opts.script_log and len(self.stdout_seen) < SCRIPTLOG_STDOUT_MAX:
                self.stdout_seen += chunk
            data += chunk
        return bytes(data), False

    def read_line(self, limit: int) -> bytes:
        """For NPH: output up to the first newline (and what came with it)."""
        first = b""
        while b"\n" not in first and len(first) < limit:
            chunk = self.read()
            if not chunk:
                break
            first += chunk
        return first

    # -- end ---------------------------------------------------------------------

    def end(self, reason: int = wire.REASON_KILLED, drain: bool = False, log_exit: bool = True) -> wire.Exited | None:
        """Make sure the script is gone and accounted for; idempotent.

        ``drain`` reads stdout to its end first (an internal redirect discards
        it); a script still running is killed with ``reason``.
        """
        session = self.session
        if session is None or self.ended:
            return self.exited
        self.ended = True
        opts = self.req.opts
        try:
            if drain:
                drained = 0
                try:
                    while drained < DRAIN_MAX_BYTES:
                        chunk = self.read()
                        if not chunk:
                            break
                        drained += len(chunk)
                except (ScriptTimeout, ClientGone, DaemonLost, DaemonUnavailable):
                    pass
            exited = session.exited
            if exited is None and not session.stdout_open:
                try:
                    exited = session.finish(min(self.loc.timeout, 5.0))
                except (ScriptTimeout, ClientGone, DaemonLost):
                    exited = session.exited
            if exited is None:
                exited = session.kill(reason, opts.kill_grace + EXIT_WAIT_EXTRA_SECONDS)
            self.exited = exited
            if exited is None:
                log.error("CGI script %s (pid %d): no exit status from the daemon", self.filename, session.ch.pid)
            else:
                ending.account(self.req, self.filename, session.ch.pid, exited, log_exit)
            if session.body_error and session.body_failure is None:
                log.info("Error writing request body to script %s: %s", self.filename, session.body_error)
            if not session.stop_body(BODY_STOP_SECONDS):
                log.warning("client of %s still sending its body after the request ended", self.filename)
            return exited
        finally:
            session.close()

    def capture_rest(self) -> None:
        """For a ScriptLog record: what the script printed after a bad header.

        Bounded in time and bytes: a script that prints forever must not
        hold the worker (Apache reads to EOF here, with no bound).
        """
        session = self.session
        if session is None or self.ended:
            return
        session.idle_timeout = min(session.idle_timeout, CAPTURE_SECONDS)
        deadline = time.monotonic() + CAPTURE_SECONDS
        try:
            while len(self.stdout_seen) < SCRIPTLOG_STDOUT_MAX and time.monotonic() < deadline:
                if not self.read():
                    break
        except Exception:  # noqa: BLE001 - whatever ended the capture, the record is written
            pass

    @property
    def body_head(self) -> bytes:
        return bytes(self.session.body_head) if self.session is not None else b""

    def _stderr_line(self, line: bytes) -> None:
        ending.stderr_line(self.req, self.filename, line, self.status_for_log)


def _with_status(head: Head, status_line: str | None) -> Head:
    if status_line is None:
        return head
    code, reason = parse_status_line(status_line)
    return dataclasses.replace(head, status=code, reason=reason, explicit_status=True)
