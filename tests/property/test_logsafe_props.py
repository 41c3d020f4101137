"""Property tests for log escaping: whatever a client or script sends, a logged
value stays on one printable-ASCII line, never raises, and can be read back."""

from __future__ import annotations

import re
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from gunicorn_cgid import scriptlog
from gunicorn_cgid.logsafe import escape, escape_item

_ESCAPE = re.compile(r'\\(?:x([0-9a-f]{2})|u(d[89a-f][0-9a-f]{2})|(.))', re.S)
_NAMED = {"b": b"\b", "n": b"\n", "r": b"\r", "t": b"\t", "v": b"\v", "\\": b"\\", '"': b'"'}


def unescape(text: str) -> bytes:
    """The bytes an escaped value stands for; a surrogate with no byte comes back as its ``\\udxxx``."""
    def one(m: re.Match) -> str:
        hexbyte, surrogate, named = m.groups()
        if hexbyte:
            return chr(int(hexbyte, 16))
        if surrogate:
            return "\\u" + surrogate
        assert named in _NAMED, "unknown escape %r in %r" % (m.group(), text)
        return _NAMED[named].decode("latin-1")
    assert text.isascii()
    return _ESCAPE.sub(one, text).encode("latin-1")


def assert_one_printable_line(text: str) -> None:
    assert text.isascii() and text.isprintable(), repr(text)
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)


_any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=40)  # surrogates too
_attack_text = st.text(alphabet=st.sampled_from(
    ["\n", "\r", "\x00", "\x1b", "\\", '"', "%", "x", "\udcff", "\ud800", "\xe9", "\u2028", " "]), max_size=20)
_texts = st.one_of(_any_text, _attack_text)


@settings(max_examples=400)
@given(st.binary(max_size=60))
def test_bytes_round_trip(value):
    for escaped, quote in ((escape(value), False), (escape_item(value), True)):
        assert_one_printable_line(escaped)
        assert unescape(escaped) == value
        if not quote:  # escape() leaves double quotes as they are
            assert escaped.count('"') == value.count(b'"')


@settings(max_examples=400)
@given(_texts)
def test_any_str_never_raises_and_stays_one_line(value):
    for escaped in (escape(value), escape_item(value), escape(value, wsgi=True), escape_item(value, wsgi=True)):
        assert_one_printable_line(escaped)
        unescape(escaped)


@settings(max_examples=400)
@given(st.binary(max_size=60))
def test_decoded_strings_round_trip_to_their_bytes(raw):
    # Native strings (UTF-8, undecodable bytes as surrogates) and WSGI strings (latin-1) as the server makes them.
    native = raw.decode("utf-8", "surrogateescape")
    assert unescape(escape(native)) == raw
    assert unescape(escape_item(native)) == raw
    wsgi = raw.decode("latin-1")
    assert unescape(escape(wsgi, wsgi=True)) == raw
    assert unescape(escape_item(wsgi, wsgi=True)) == raw


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40))
def test_text_without_surrogates_round_trips_to_utf8(value):
    assert unescape(escape(value)) == value.encode("utf-8")


@settings(max_examples=300)
@given(st.binary(max_size=12), st.binary(max_size=12))
def test_injective_on_bytes(a, b):
    if a != b:
        assert escape(a) != escape(b)
        assert escape_item(a) != escape_item(b)


@settings(max_examples=200)
@given(st.lists(_texts, min_size=1, max_size=40, unique=True))
def test_injective_on_a_sample_of_decodable_strings(values):
    # Injective on what decoding can produce (surrogateescape never yields surrogates forming valid UTF-8).
    decoded = {v.encode("utf-8", "surrogatepass").decode("utf-8", "surrogateescape") for v in values}
    assert len({escape(v) for v in decoded}) == len(decoded)


# -- ScriptLog records ---------------------------------------------------------

_header = st.tuples(_texts, _texts)
_blob = st.binary(max_size=40)


@settings(max_examples=300, deadline=None)
@given(method=_texts, uri=_texts, query=_texts, protocol=_texts, filename=_texts,
       message=st.one_of(_texts, st.binary(max_size=40)), status=st.integers(100, 599))
def test_error_record_has_exactly_its_own_lines(method, uri, query, protocol, filename, message, status):
    record = scriptlog.format_error(method, uri, query, protocol, status, filename, message, time.time())
    assert isinstance(record, bytes)
    assert record.count(b"\n") == 4 and record.endswith(b"\n")
    assert record.startswith(b"%% [")
    lines = record.split(b"\n")
    assert lines[2] == b"%error"
    assert not any(b < 0x20 or b >= 0x7F for b in record.replace(b"\n", b""))


@settings(max_examples=300, deadline=None)
@given(method=st.one_of(st.sampled_from(["GET", "POST", "PUT"]), _texts), uri=_texts, query=_texts,
       protocol=_texts, filename=_texts, request_headers=st.lists(_header, max_size=5), body=_blob,
       response_headers=st.lists(_header, max_size=3), last_line=st.one_of(_texts, st.binary(max_size=40)),
       stdout=_blob, stderr=_blob)
def test_full_record_has_exactly_its_own_lines(method, uri, query, protocol, filename, request_headers, body,
                                               response_headers, last_line, stdout, stderr):
    record = scriptlog.format_full(method, uri, query, protocol, 500, filename, request_headers, body,
                                   response_headers, last_line, stdout, stderr, time.time())
    assert isinstance(record, bytes)
    # Two head lines, %request, one per header, %response, one per header, the last line; the raw
    # data sections (body, %stdout, %stderr) add a marker or blank line, a closing newline and their own.
    expected = 2 + 1 + len(request_headers) + 1 + len(response_headers) + (1 if last_line else 0)
    if method in ("POST", "PUT") and body:
        expected += 2 + body.count(b"\n")
    if stdout:
        expected += 2 + stdout.count(b"\n")
    if stderr:
        expected += 2 + stderr.count(b"\n")
    assert record.count(b"\n") == expected
    head = record.split(b"\n%request\n")[0]
    assert head.count(b"\n") == 1
    assert not any(b < 0x20 or b >= 0x7F for b in head.replace(b"\n", b""))
