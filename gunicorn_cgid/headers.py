"""Sans-IO parser for the header block a CGI script writes before its body.

Runs in the gunicorn worker, which feeds it the script's stdout. Follows
RFC 3875 §6 and Apache httpd 2.4's ``ap_scan_script_header_err_core_ex``
(server/util_script.c), tightened where Apache relays unsafe input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

from gunicorn_cgid.errors import BadGateway, ScriptHeaderError

__all__ = [
    "MAX_HEADER_BLOCK",
    "MAX_HEADER_LINE",
    "Head",
    "HeaderParser",
    "parse_status_line",
    "split_status_line",
]

# Apache reads each header line into a MAX_STRING_LEN (8192) buffer, which
# leaves 8190 bytes of content once the line ending is accounted for.
MAX_HEADER_LINE: int = 8190
MAX_HEADER_BLOCK: int = 65536

# RFC 9110 §5.6.2 token; the same check Apache's check_headers()
# (modules/http/http_filters.c) applies to response header names.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Control characters other than HTAB (CR is already gone, see _take_line).
# Letting them through would allow response splitting, so Apache's
# check_headers() refuses such values too.
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(r"([0-9]{3})(?: (.*))?", re.DOTALL)

# PEP 3333 forbids a WSGI application from sending hop-by-hop headers
# (RFC 9110 §7.6.1), and gunicorn writes Server and Date itself.
_DROPPED = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer",
    "upgrade", "server", "date",
    # CVE-2024-24795: a script-supplied length is never trusted; the
    # server frames the body itself.
    "content-length",
})
# Apache stores these with apr_table_set()/ap_set_content_type(), so a
# repeated one replaces the earlier value instead of being added.
_SINGLE = frozenset({"content-type", "location", "etag", "last-modified"})

_BLANK = object()  # sentinel returned by _process_line for the end of the block


@dataclass(frozen=True, slots=True)
class Head:
    """The parsed header block of one script response."""

    status: int
    reason: str
    explicit_status: bool
    headers: list[tuple[str, str]]
    location: str | None
    last_line: str


def parse_status_line(value: str) -> tuple[int, str]:
    """Parse a ``Status:`` value ("404" or "418 Custom Reason") to (code, reason).

    Raises ``BadGateway`` for anything that is not a final 2xx-5xx status.
    """
    text = value.strip(" \t")
    match = _STATUS.fullmatch(text)
    # Deviation from Apache: Apache takes atoi() of the value, so "200abc"
    # or " 2000" pass; only exactly three digits (then SP reason) are
    # accepted here.
    if match is None or _CTL.search(text):
        raise BadGateway(f"Invalid status line from script: {value!r}")
    code = int(match.group(1))
    if not 100 <= code <= 599:
        raise BadGateway(f"Invalid status line from script: {value!r}")
    if code < 200:
        # Deviation from Apache: Apache relays 1xx as the final status; a
        # CGI has one response, so an interim code cannot be correct.
        raise BadGateway(f"Interim status line from script: {value!r}")
    reason = (match.group(2) or "").strip(" \t")
    if not reason:
        try:
            reason = HTTPStatus(code).phrase
        except ValueError:
            reason = "Unknown"
    return code, reason


def split_status_line(first: bytes) -> tuple[str | None, bytes]:
    """An NPH script's ``HTTP/1.1 404 Not Found`` off the front of its output.

    Returns ("404 Not Found", the rest), or (None, everything) when the output
    does not start with a complete status line.
    """
    line, nl, rest = first.partition(b"\n")
    parts = line.rstrip(b"\r").decode("latin-1").split(None, 1)
    if nl and len(parts) == 2 and parts[0].startswith("HTTP/") and parts[1][:3].isdigit():
        return parts[1], rest
    return None, first


class HeaderParser:
    """feed() bytes of script stdout until it returns a Head.

    ``lines`` collects each header line seen (CRs removed, no line ending)
    so ScriptLog can show them even after a failure; ``rest`` holds the
    body bytes that arrived together with the blank line.
    """

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.rest: bytes = b""
        self._pending = bytearray()  # current unterminated line, CRs removed
        self._consumed = 0  # raw bytes of the block taken so far
        self._head: Head | None = None
        self._error: Exception | None = None
        # Parsed state; entries become None when a _SINGLE header repeats.
        self._entries: list[tuple[str, str] | None] = []
        self._single_at: dict[str, int] = {}
        self._status = 200
        self._reason = "OK"
        self._explicit_status = False
        self._location: str | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for the current unterminated header line."""
        return len(self._pending)

    def feed(self, data: bytes) -> Head | None:
        """Consume ``data``; return the Head once the blank line is seen, else None.

        Raises ``ScriptHeaderError`` or ``BadGateway`` for a bad block.
        """
        if self._head is not None:
            raise RuntimeError("HeaderParser.feed() called after the header block ended")
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except (ScriptHeaderError, BadGateway) as exc:
            self._error = exc
            raise

    def close(self) -> Head:
        """Signal EOF on the script's stdout; return the Head or raise ScriptHeaderError."""
        if self._head is not None:
            return self._head
        if self._error is not None:
            raise self._error
        try:
            seen = bool(self.lines or self._pending)
            if self._pending:
                # Apache hands an unterminated last line to the parser
                # before noticing EOF, so a malformed one is reported as such.
                self._process_line(bytes(self._pending))
                self._pending.clear()
            if not seen:
                raise ScriptHeaderError("End of script output before headers")
            raise ScriptHeaderError("Premature end of script headers")
        except (ScriptHeaderError, BadGateway) as exc:
            self._error = exc
            raise

    def _feed(self, data: bytes) -> Head | None:
        start = 0
        size = len(data)
        while start < size:
            lf = data.find(b"\n", start)
            end = size if lf < 0 else lf
            # Apache's getsfunc_BRIGADE() drops every CR while copying a
            # line, so CRLF, LF and stray CRs all behave the same.
            chunk = data[start:end].replace(b"\r", b"")
            if len(self._pending) + len(chunk) > MAX_HEADER_LINE:
                # Deviation from Apache: Apache cuts an over-long line at its
                # buffer size and parses the tail as another line; refusing
                # it is clearer and keeps memory bounded.
                raise ScriptHeaderError(
                    f"Script header line too long (over {MAX_HEADER_LINE} bytes): "
                    f"{bytes(self._pending[:30] or chunk[:30]).decode('latin-1')!r}"
                )
            # Raw bytes (CRs and line endings included) count toward the
            # block size, up to and including the blank line's LF.
            raw = (end - start) + (0 if lf < 0 else 1)
            if self._consumed + raw > MAX_HEADER_BLOCK:
                raise ScriptHeaderError(
                    f"Script header block too long (over {MAX_HEADER_BLOCK} bytes)"
                )
            self._consumed += raw
            self._pending += chunk
            if lf < 0:
                return None
            line = bytes(self._pending)
            self._pending.clear()
            start = lf + 1
            if self._process_line(line) is _BLANK:
                self.rest = data[start:]
                self._head = self._build_head()
                return self._head
        return None

    def _process_line(self, line: bytes) -> object:
        if not line:
            return _BLANK
        self.lines.append(line)
        text = line.decode("latin-1")
        name, sep, value = text.partition(":")
        if not sep:
            # Also catches obs-fold continuation lines (RFC 9112 §5.2),
            # which RFC 3875 does not allow either.
            raise ScriptHeaderError(
                f"malformed header from script: Bad header: {text[:30]}"
            )
        # The name is not trimmed: "Foo : bar" is refused, as RFC 9112 §5.1
        # requires for whitespace before the colon.
        if not _TOKEN.fullmatch(name):
            raise ScriptHeaderError(
                f"malformed header from script: Bad header name: {name[:30]}"
            )
        value = value.strip(" \t")
        if _CTL.search(value):
            raise ScriptHeaderError(
                f"malformed header from script: Bad value for header {name}: "
                f"{value[:30]}"
            )
        self._add(name, value)
        return None

    def _add(self, name: str, value: str) -> None:
        lname = name.lower()
        if lname == "status":
            self._status, self._reason = parse_status_line(value)
            self._explicit_status = True
            return
        if lname == "transfer-encoding":
            # Deviation from Apache: Apache relays it, but the server frames
            # the body, and a script-chosen coding invites request smuggling
            # on the next hop.
            raise BadGateway(f"script sent Transfer-Encoding: {value!r}")
        if lname in _DROPPED:
            return
        if lname == "content-type":
            # ap_content_type_tolower(): the media type is case-insensitive,
            # parameter values may not be.
            mtype, semi, params = value.partition(";")
            value = mtype.lower() + semi + params
        elif lname == "location":
            self._location = value
        # Deviation from Apache: Last-Modified is relayed as given; Apache
        # re-formats it and clamps future dates (conditional.py clamps when
        # evaluating preconditions instead).
        if lname in _SINGLE:
            previous = self._single_at.get(lname)
            if previous is not None:
                self._entries[previous] = None
            self._single_at[lname] = len(self._entries)
        self._entries.append((name, value))

    def _build_head(self) -> Head:
        return Head(
            status=self._status,
            reason=self._reason,
            explicit_status=self._explicit_status,
            headers=[entry for entry in self._entries if entry is not None],
            location=self._location,
            last_line=self.lines[-1].decode("latin-1") if self.lines else "",
        )
