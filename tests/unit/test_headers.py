"""Table-driven tests for the CGI response header parser."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from gunicorn_cgid.errors import BadGateway, ScriptHeaderError
from gunicorn_cgid.headers import (
    MAX_HEADER_BLOCK,
    MAX_HEADER_LINE,
    Head,
    HeaderParser,
    parse_status_line,
)


@dataclass
class Expect:
    status: int = 200
    reason: str = "OK"
    explicit_status: bool = False
    headers: list[tuple[str, str]] = field(default_factory=list)
    location: str | None = None
    last_line: str = ""


VALID: list[tuple[str, bytes, Expect]] = [
    ("lf", b"Content-Type: text/plain\n\n",
     Expect(headers=[("Content-Type", "text/plain")], last_line="Content-Type: text/plain")),
    ("crlf", b"Content-Type: text/plain\r\nX-A: 1\r\n\r\n",
     Expect(headers=[("Content-Type", "text/plain"), ("X-A", "1")], last_line="X-A: 1")),
    ("mixed endings and stray cr", b"X-A: 1\r\nX-\rB: 2\n\r\n",
     Expect(headers=[("X-A", "1"), ("X-B", "2")], last_line="X-B: 2")),
    ("empty block", b"\n", Expect()),
    ("empty block crlf", b"\r\n", Expect()),
    ("status without reason", b"Status: 404\n\n",
     Expect(status=404, reason="Not Found", explicit_status=True, last_line="Status: 404")),
    ("status custom reason", b"Status: 418 Custom Reason\nX-A: b\n\n",
     Expect(status=418, reason="Custom Reason", explicit_status=True,
            headers=[("X-A", "b")], last_line="X-A: b")),
    ("status lowercase name", b"status:   201  \n\n",
     Expect(status=201, reason="Created", explicit_status=True, last_line="status:   201  ")),
    ("status unknown code", b"Status: 599\n\n",
     Expect(status=599, reason="Unknown", explicit_status=True, last_line="Status: 599")),
    ("status 200 explicit", b"Status: 200 Fine\n\n",
     Expect(status=200, reason="Fine", explicit_status=True, last_line="Status: 200 Fine")),
    ("status last wins", b"Status: 404\nStatus: 403\n\n",
     Expect(status=403, reason="Forbidden", explicit_status=True, last_line="Status: 403")),
    ("location", b"Location: /other\n\n",
     Expect(headers=[("Location", "/other")], location="/other", last_line="Location: /other")),
    ("location last wins", b"Location: /a\nX-A: 1\nlocation: http://h/b\n\n",
     Expect(headers=[("X-A", "1"), ("location", "http://h/b")], location="http://h/b",
            last_line="location: http://h/b")),
    ("location with 302 not applied here", b"Location: http://h/\nStatus: 301\n\n",
     Expect(status=301, reason="Moved Permanently", explicit_status=True,
            headers=[("Location", "http://h/")], location="http://h/",
            last_line="Status: 301")),
    ("content-length dropped", b"Content-Length: 5\nX-A: 1\ncontent-length: 9\n\n",
     Expect(headers=[("X-A", "1")], last_line="content-length: 9")),
    ("hop-by-hop dropped",
     (b"Connection: close\nKeep-Alive: 5\nProxy-Connection: x\nTE: trailers\n"
      b"Trailer: X\nUpgrade: h2c\nServer: evil\nDate: now\nX-Keep: y\n\n"),
     Expect(headers=[("X-Keep", "y")], last_line="X-Keep: y")),
    ("hop-by-hop case-insensitive", b"CONNECTION: close\nupgrade: x\n\n",
     Expect(last_line="upgrade: x")),
    ("set-cookie kept separately", b"Set-Cookie: a=1\nX-A: 1\nSet-Cookie: b=2; Path=/\n\n",
     Expect(headers=[("Set-Cookie", "a=1"), ("X-A", "1"), ("Set-Cookie", "b=2; Path=/")],
            last_line="Set-Cookie: b=2; Path=/")),
    ("other repeats kept", b"X-A: 1\nx-a: 2\n\n",
     Expect(headers=[("X-A", "1"), ("x-a", "2")], last_line="x-a: 2")),
    ("content-type lowercased, params kept", b"Content-Type: Text/HTML; Charset=UTF-8 \n\n",
     Expect(headers=[("Content-Type", "text/html; Charset=UTF-8")],
            last_line="Content-Type: Text/HTML; Charset=UTF-8 ")),
    ("content-type last wins", b"Content-type: text/plain\nContent-Type: TEXT/html\n\n",
     Expect(headers=[("Content-Type", "text/html")], last_line="Content-Type: TEXT/html")),
    ("etag and last-modified kept",
     b'ETag: W/"x"\nLast-Modified: Sun, 06 Nov 1994 08:49:37 GMT\n\n',
     Expect(headers=[("ETag", 'W/"x"'), ("Last-Modified", "Sun, 06 Nov 1994 08:49:37 GMT")],
            last_line="Last-Modified: Sun, 06 Nov 1994 08:49:37 GMT")),
    ("value whitespace trimmed, tab inside kept", b"X-A: \t a\tb \t\n\n",
     Expect(headers=[("X-A", "a\tb")], last_line="X-A: \t a\tb \t")),
    ("empty value", b"X-Empty:\n\n", Expect(headers=[("X-Empty", "")], last_line="X-Empty:")),
    ("value with colon", b"X-Url: http://h:80/\n\n",
     Expect(headers=[("X-Url", "http://h:80/")], last_line="X-Url: http://h:80/")),
    ("latin-1 value", b"X-A: caf\xe9\n\n",
     Expect(headers=[("X-A", "caf\xe9")], last_line="X-A: caf\xe9")),
    ("no content-type is fine", b"X-A: 1\n\n", Expect(headers=[("X-A", "1")], last_line="X-A: 1")),
    ("line at the limit",
     b"X-A: " + b"a" * (MAX_HEADER_LINE - 5) + b"\r\n\r\n",
     Expect(headers=[("X-A", "a" * (MAX_HEADER_LINE - 5))],
            last_line="X-A: " + "a" * (MAX_HEADER_LINE - 5))),
]

INVALID: list[tuple[str, bytes, type[Exception], str]] = [
    ("no colon", b"Content-Type text/plain\n\n", ScriptHeaderError,
     "malformed header from script: Bad header: Content-Type text/plain"),
    ("no colon truncated to 30", b"x" * 50 + b"\n\n", ScriptHeaderError,
     "malformed header from script: Bad header: " + "x" * 30),
    ("folded line", b"X-A: 1\n  continued\n\n", ScriptHeaderError,
     "malformed header from script: Bad header:   continued"),
    ("folded line with colon", b"X-A: 1\n\tb: c\n\n", ScriptHeaderError, "Bad header name"),
    ("space before colon", b"Foo : bar\n\n", ScriptHeaderError, "Bad header name"),
    ("empty name", b": bar\n\n", ScriptHeaderError, "Bad header name"),
    ("non-token name", b"Fo(o): bar\n\n", ScriptHeaderError, "Bad header name"),
    ("control char in value", b"X-A: a\x01b\n\n", ScriptHeaderError, "Bad value"),
    ("nul in value", b"X-A: a\x00b\n\n", ScriptHeaderError, "Bad value"),
    ("del in value", b"X-A: a\x7f\n\n", ScriptHeaderError, "Bad value"),
    ("status non-numeric", b"Status: OK\n\n", BadGateway, "'OK'"),
    ("status too short", b"Status: 20\n\n", BadGateway, "Invalid status line"),
    ("status four digits", b"Status: 2000\n\n", BadGateway, "Invalid status line"),
    ("status trailing garbage", b"Status: 200x\n\n", BadGateway, "Invalid status line"),
    ("status empty", b"Status:\n\n", BadGateway, "Invalid status line"),
    ("status below range", b"Status: 099\n\n", BadGateway, "Invalid status line"),
    ("status above range", b"Status: 600 Nope\n\n", BadGateway, "'600 Nope'"),
    ("status interim", b"Status: 103 Early Hints\n\n", BadGateway, "Interim"),
    ("transfer-encoding", b"Transfer-Encoding: chunked\n\n", BadGateway,
     "script sent Transfer-Encoding"),
    ("transfer-encoding any case", b"transfer-encoding: identity\n\n", BadGateway,
     "script sent Transfer-Encoding"),
    ("line over the limit",
     b"X-A: " + b"a" * (MAX_HEADER_LINE - 4) + b"\n\n", ScriptHeaderError, "too long"),
    ("block over the limit",
     b"".join(b"X-%05d: %s\n" % (i, b"v" * 90) for i in range(800)) + b"\n",
     ScriptHeaderError, "block too long"),
]

EOF_CASES: list[tuple[str, bytes, str]] = [
    ("nothing", b"", "End of script output before headers"),
    ("only cr", b"\r", "End of script output before headers"),
    ("one header", b"Content-Type: text/plain\n", "Premature end of script headers"),
    ("unterminated line", b"Content-Type: text/plain", "Premature end of script headers"),
    ("crlf headers", b"X-A: 1\r\nX-B: 2\r\n", "Premature end of script headers"),
]


def _check(head: Head, expect: Expect) -> None:
    assert head.status == expect.status
    assert head.reason == expect.reason
    assert head.explicit_status is expect.explicit_status
    assert head.headers == expect.headers
    assert head.location == expect.location
    assert head.last_line == expect.last_line


def _feed_all(raw: bytes, *, bytewise: bool) -> tuple[HeaderParser, Head]:
    parser = HeaderParser()
    chunks = [raw[i:i + 1] for i in range(len(raw))] if bytewise else [raw]
    head = None
    for i, chunk in enumerate(chunks):
        head = parser.feed(chunk)
        if head is not None:
            assert i == len(chunks) - 1, "Head returned before the blank line"
    assert head is not None
    return parser, head


@pytest.mark.parametrize(("raw", "expect"), [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_valid_three_ways(raw: bytes, expect: Expect) -> None:
    parser, head = _feed_all(raw, bytewise=False)
    _check(head, expect)
    assert parser.rest == b""
    assert parser.close() is head

    parser, head = _feed_all(raw, bytewise=True)
    _check(head, expect)
    assert parser.rest == b""

    body = b"body\r\nStatus: 500\n\nmore"
    parser = HeaderParser()
    head = parser.feed(raw + body)
    assert head is not None
    _check(head, expect)
    assert parser.rest == body


@pytest.mark.parametrize(("raw", "expect"), [c[1:] for c in VALID], ids=[c[0] for c in VALID])
def test_lines_recorded(raw: bytes, expect: Expect) -> None:
    parser, _head = _feed_all(raw, bytewise=False)
    # A leading LF lets a block that is only the blank line split the same way.
    block = (b"\n" + raw.replace(b"\r", b"")).split(b"\n\n", 1)[0][1:]
    assert parser.lines == ([] if not block else block.split(b"\n"))


@pytest.mark.parametrize(("raw", "exc", "message"), [c[1:] for c in INVALID],
                         ids=[c[0] for c in INVALID])
def test_invalid(raw: bytes, exc: type[Exception], message: str) -> None:
    for chunks in ([raw], [raw[i:i + 1] for i in range(len(raw))]):
        parser = HeaderParser()
        with pytest.raises(exc) as info:
            for chunk in chunks:
                parser.feed(chunk)
            parser.close()
        assert type(info.value) is exc
        assert message in info.value.message
        assert info.value.status == (502 if exc is BadGateway else 500)
        # A failed parser keeps failing the same way.
        with pytest.raises(exc):
            parser.feed(b"\n")
        with pytest.raises(exc):
            parser.close()


@pytest.mark.parametrize(("raw", "message"), [c[1:] for c in EOF_CASES],
                         ids=[c[0] for c in EOF_CASES])
def test_eof_before_blank_line(raw: bytes, message: str) -> None:
    parser = HeaderParser()
    assert parser.feed(raw) is None
    with pytest.raises(ScriptHeaderError) as info:
        parser.close()
    assert info.value.message == message
    assert info.value.status == 500


def test_unterminated_malformed_line_at_eof() -> None:
    parser = HeaderParser()
    assert parser.feed(b"X-A: 1\nbogus") is None
    with pytest.raises(ScriptHeaderError, match="Bad header"):
        parser.close()
    assert parser.lines == [b"X-A: 1", b"bogus"]


def test_over_long_line_is_not_buffered() -> None:
    parser = HeaderParser()
    parser.feed(b"X-A: ")
    chunk = b"a" * 1000
    with pytest.raises(ScriptHeaderError, match="too long"):
        for _ in range(20):
            parser.feed(chunk)
            assert parser.buffered <= MAX_HEADER_LINE
    assert parser.buffered <= MAX_HEADER_LINE


def test_huge_single_chunk_rejected_without_buffering() -> None:
    parser = HeaderParser()
    with pytest.raises(ScriptHeaderError, match="too long"):
        parser.feed(b"X" * (10 * MAX_HEADER_LINE))
    assert parser.buffered == 0


def test_crs_do_not_count_toward_line_limit() -> None:
    parser = HeaderParser()
    line = b"X-A: " + b"a" * (MAX_HEADER_LINE - 5)
    assert parser.feed(line + b"\r") is None
    assert parser.buffered == MAX_HEADER_LINE
    head = parser.feed(b"\n\r\n")
    assert head is not None
    assert head.headers == [("X-A", "a" * (MAX_HEADER_LINE - 5))]


def test_block_exactly_at_limit_is_accepted() -> None:
    line = b"X-A: " + b"a" * 8000 + b"\n"
    lines = [line] * (MAX_HEADER_BLOCK // len(line))
    filler = MAX_HEADER_BLOCK - len(line) * len(lines) - 1
    raw = b"".join(lines) + b"X-B: " + b"b" * (filler - 6) + b"\n" + b"\n"
    assert len(raw) == MAX_HEADER_BLOCK
    head = HeaderParser().feed(raw + b"body")
    assert head is not None
    with pytest.raises(ScriptHeaderError, match="block too long"):
        HeaderParser().feed(b"X-C: c\n" + raw)


def test_lines_recorded_before_failure() -> None:
    parser = HeaderParser()
    with pytest.raises(ScriptHeaderError):
        parser.feed(b"X-A: 1\r\nno colon here\r\n\r\n")
    assert parser.lines == [b"X-A: 1", b"no colon here"]


def test_feed_after_head_raises() -> None:
    parser = HeaderParser()
    assert parser.feed(b"X-A: 1\n\nbody") is not None
    with pytest.raises(RuntimeError):
        parser.feed(b"more")


def test_split_crlf_blank_line() -> None:
    parser = HeaderParser()
    assert parser.feed(b"X-A: 1\r\n\r") is None
    head = parser.feed(b"\nbody")
    assert head is not None
    assert parser.rest == b"body"


def test_head_is_frozen() -> None:
    head = HeaderParser().feed(b"\n")
    assert head is not None
    with pytest.raises(AttributeError):
        head.status = 500  # type: ignore[misc]


STATUS_LINES: list[tuple[str, tuple[int, str] | None]] = [
    ("200", (200, "OK")),
    ("200 OK", (200, "OK")),
    ("  404  Gone Away  ", (404, "Gone Away")),
    ("418 Custom Reason", (418, "Custom Reason")),
    ("302", (302, "Found")),
    ("599 ", (599, "Unknown")),
    ("500 caf\xe9", (500, "caf\xe9")),
    ("abc", None),
    ("20", None),
    ("2000", None),
    ("200\tOK", None),
    ("200 a\x01", None),
    ("100 Continue", None),
    ("199", None),
    ("600", None),
    ("000", None),
    ("", None),
    ("\u0662\u0660\u0660", None),  # non-ASCII digits are not a status code
]


@pytest.mark.parametrize(("value", "expected"), STATUS_LINES)
def test_parse_status_line(value: str, expected: tuple[int, str] | None) -> None:
    if expected is None:
        with pytest.raises(BadGateway) as info:
            parse_status_line(value)
        assert repr(value) in info.value.message
        assert info.value.status == 502
    else:
        assert parse_status_line(value) == expected
