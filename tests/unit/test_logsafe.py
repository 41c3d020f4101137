"""Log escaping as Apache's ap_escape_errorlog_item / ap_escape_logitem, on the attacks of issue #9."""

from __future__ import annotations

import pytest

from gunicorn_cgid.logsafe import escape, escape_item


def apache(byte: int, quote: bool) -> str:
    """One byte as httpd's util.c escapes it: the T_ESCAPE_LOGITEM test, then its switch."""
    if 0x20 <= byte <= 0x7E and byte != 0x5C and not (quote and byte == 0x22):
        return chr(byte)
    named = {0x08: "b", 0x0A: "n", 0x0D: "r", 0x09: "t", 0x0B: "v", 0x5C: "\\", 0x22: '"'}
    return "\\" + named[byte] if byte in named else "\\x%02x" % byte


@pytest.mark.parametrize("byte", range(256))
def test_every_byte_as_apache(byte):
    assert escape(bytes([byte])) == apache(byte, quote=False)
    assert escape_item(bytes([byte])) == apache(byte, quote=True)
    # A WSGI string holds the same byte as one char.
    assert escape(chr(byte), wsgi=True) == apache(byte, quote=False)
    assert escape_item(chr(byte), wsgi=True) == apache(byte, quote=True)


@pytest.mark.parametrize("value,expected", [
    ("zz\n[CRITICAL] FORGED", "zz\\n[CRITICAL] FORGED"),
    ("/cgi-bin/x\r\n[ERROR] fake", "/cgi-bin/x\\r\\n[ERROR] fake"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
    ("a\rb", "a\\rb"),
    ("nul\x00here", "nul\\x00here"),             # Apache would stop at the NUL; nothing is lost here
    ("\b\t\v\f\x7f", "\\b\\t\\v\\x0c\\x7f"),
    ("a\\nb", "a\\\\nb"),                          # a typed backslash cannot pass for an escape
    ("\udcff", "\\xff"),                           # an undecodable byte kept by surrogateescape
    ("\udcff\udcfe", "\\xff\\xfe"),
    ("\ud800", "\\ud800"),                         # a surrogate that stands for no byte
    ("a\udc00b\udfff", "a\\udc00b\\udfff"),
    ("caf\u00e9", "caf\\xc3\\xa9"),                 # valid UTF-8 is escaped byte by byte, as Apache
    ("\u202egnp.exe", "\\xe2\\x80\\xaegnp.exe"),    # a bidi override cannot reorder the line
    ("line\u2028sep", "line\\xe2\\x80\\xa8sep"),
    (b"\xff\xfe", "\\xff\\xfe"),
    (b"bad \xff\xfe end", "bad \\xff\\xfe end"),
    (b"caf\xc3\xa9", "caf\\xc3\\xa9"),
    (b"zz\n[CRITICAL] FORGED", "zz\\n[CRITICAL] FORGED"),
])
def test_attack_strings(value, expected):
    assert escape(value) == expected
    assert escape(value).isascii() and escape(value).isprintable()


def test_quote_is_escaped_only_in_log_items():
    assert escape('say "hi"') == 'say "hi"'
    assert escape_item('say "hi"') == 'say \\"hi\\"'
    assert escape_item(b'"\\') == '\\"\\\\'


def test_wsgi_strings_are_one_byte_per_char():
    assert escape("x=\xe9", wsgi=True) == "x=\\xe9"
    assert escape("x=\xe9") == "x=\\xc3\\xa9"
    # Not a WSGI string after all (a char above 0xff): read as a native string.
    assert escape("\u20ac\xe9", wsgi=True) == "\\xe2\\x82\\xac\\xc3\\xa9"
    assert escape("\udcff\xe9", wsgi=True) == "\\xff\\xc3\\xa9"


def test_printable_ascii_is_returned_as_is():
    value = "/cgi-bin/script.sh/path info?a=1&b=[x]~"
    assert escape(value) is value
    assert escape_item(value) is value
    assert escape(value.encode()) == value
    assert escape("") == escape(b"") == escape_item("") == ""


def test_bytes_like_values():
    assert escape(bytearray(b"a\nb")) == "a\\nb"
    assert escape(memoryview(b"\xff")) == "\\xff"  # type: ignore[arg-type]


def test_output_always_encodes():
    for value in ("\ud800\udfff\udcff\U0010ffff\x00", b"\x00\xff" * 3, "\xe9" * 3):
        escape(value).encode("ascii")
        escape_item(value, wsgi=True).encode("ascii")
