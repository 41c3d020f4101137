"""Property tests for the CGI response header parser."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from gunicorn_cgid.errors import BadGateway, ScriptHeaderError
from gunicorn_cgid.headers import MAX_HEADER_LINE, HeaderParser

# Names the parser removes or rewrites; the round-trip property leaves them
# out of the generated headers and checks Status separately.
_SPECIAL = {
    "status", "content-length", "transfer-encoding", "connection", "keep-alive",
    "proxy-connection", "te", "trailer", "upgrade", "server", "date",
    "content-type", "location", "etag", "last-modified",
}
_TCHAR = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Bytes weighted toward the ones the parser cares about.
_interesting = st.sampled_from([b"\n", b"\r\n", b"\r", b":", b" ", b"\t", b"Status: ",
                                b"Status: 200\n", b"X-A: b\n", b"\x00", b"\xff",
                                b"Transfer-Encoding: x\n", b"\n\n"])
_stream = st.lists(st.one_of(st.binary(max_size=40), _interesting), max_size=30).map(b"".join)

_name = st.text(alphabet=_TCHAR, min_size=1, max_size=20).filter(
    lambda n: n.lower() not in _SPECIAL)
# Safe values: visible ASCII and obs-text, inner spaces/tabs but none at the ends.
_value = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                           blacklist_characters="\x7f"),
    max_size=40,
).map(lambda v: v.strip(" \t"))
_ows = st.text(alphabet=" \t", max_size=3)
_status = st.one_of(
    st.none(),
    st.tuples(st.integers(200, 599),
              st.text(alphabet="abcdefghij XYZ", max_size=12).map(str.strip)),
)


def _splits(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@settings(max_examples=200, deadline=None)
@given(_stream, st.lists(st.integers(0, 10_000), max_size=10))
def test_arbitrary_bytes_only_raise_gateway_errors(data: bytes, cuts: list[int]) -> None:
    parser = HeaderParser()
    try:
        head = None
        for chunk in _splits(data, cuts):
            head = parser.feed(chunk)
            if head is not None:
                break
        parser.close()
    except (ScriptHeaderError, BadGateway):
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    # Mostly LF-free runs, so long unterminated lines really occur.
    st.binary(min_size=1, max_size=3000).map(lambda b: b.replace(b"\n", b"")),
    st.integers(1, 2 * MAX_HEADER_LINE).map(lambda n: b"a" * n),
    st.sampled_from([b"\r" * 500, b"X-A: ", b"\n"]),
), min_size=1, max_size=12))
def test_unterminated_line_buffer_is_bounded(chunks: list[bytes]) -> None:
    parser = HeaderParser()
    for chunk in chunks:
        try:
            if parser.feed(chunk) is not None:
                return
        except (ScriptHeaderError, BadGateway):
            assert parser.buffered <= MAX_HEADER_LINE + 2
            return
        assert parser.buffered <= MAX_HEADER_LINE + 2


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(_name, _value, _ows, _ows), max_size=12),
    _status,
    st.integers(0, 10),
    st.sampled_from([b"\n", b"\r\n"]),
    st.binary(max_size=30),
    st.lists(st.integers(0, 10_000), max_size=6),
)
def test_well_formed_block_round_trips(
    generated: list[tuple[str, str, str, str]],
    status: tuple[int, str] | None,
    status_at: int,
    eol: bytes,
    body: bytes,
    cuts: list[int],
) -> None:
    headers = [(name, value) for name, value, _lead, _trail in generated]
    lines = [f"{name}:{lead}{value}{trail}".encode("latin-1")
             for name, value, lead, trail in generated]
    if status is not None:
        code, reason = status
        status_value = f"{code} {reason}" if reason else str(code)
        lines.insert(status_at % (len(lines) + 1), f"Status: {status_value}".encode())
    raw = b"".join(line + eol for line in lines) + eol + body

    parser = HeaderParser()
    head = None
    chunks = _splits(raw, cuts)
    while head is None:
        head = parser.feed(chunks.pop(0))
    # Body bytes are whatever came with the blank line plus the unfed chunks.
    assert parser.rest + b"".join(chunks) == body

    assert head.headers == headers
    assert parser.lines == lines
    assert head.explicit_status is (status is not None)
    if status is not None:
        assert head.status == status[0]
        if status[1]:
            assert head.reason == status[1]
    else:
        assert (head.status, head.reason) == (200, "OK")
