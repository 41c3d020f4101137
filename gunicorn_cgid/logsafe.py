"""Request-controlled values made safe for one log line, as Apache escapes them.

A URL, a header or a script's stderr line logged as it came can carry a
newline (a forged log line), terminal escapes, or bytes the log's encoding
cannot write (a lost record). These functions apply Apache 2.4's rules:

* ``escape`` is ``ap_escape_errorlog_item`` (every error log message, and
  here every one-line field of a ScriptLog record);
* ``escape_item`` is ``ap_escape_logitem`` (access-log items, which are
  quoted, so ``"`` is escaped too).

Every byte outside printable ASCII (0x20-0x7e) is escaped: ``\\b \\n \\r \\t
\\v`` by name, others as ``\\xhh`` (lowercase hex), and ``\\`` as ``\\\\``.
Non-ASCII text is escaped byte by byte like Apache (``é`` is ``\\xc3\\xa9``),
not kept as readable UTF-8: the output is then printable ASCII, which any
log handler can write whatever its encoding or locale, and which cannot hold
invisible, bidi or line-separator characters (U+202E, U+2028) that make a
value look like something else in a viewer. Bytes, and strings decoded from
bytes, can be read back exactly.

Inputs are ``bytes`` or ``str``. A ``str`` is a native string by default:
its UTF-8 bytes are escaped, undecodable bytes kept as surrogates
(``surrogateescape``) come back as the ``\\xhh`` of the original byte, and
a surrogate that stands for no byte is written ``\\udxxx``. With
``wsgi=True`` a ``str`` is a WSGI string, one char per byte (``\\xe9`` is
the byte 0xe9). Differences from Apache: a NUL byte is escaped as ``\\x00``
instead of ending the value, and nothing is cut at a length limit.
"""

from __future__ import annotations

import re

__all__ = ["escape", "escape_item"]


def _table(quote: bool) -> dict[int, str]:
    """str.translate table over 0-255: Apache's T_ESCAPE_LOGITEM bytes and their escapes."""
    named = {0x08: "\\b", 0x0A: "\\n", 0x0D: "\\r", 0x09: "\\t", 0x0B: "\\v"}
    table = {b: named.get(b, "\\x%02x" % b) for b in range(256) if not 0x20 <= b <= 0x7E}
    table[0x5C] = "\\\\"
    if quote:
        table[0x22] = '\\"'
    return table


_ERRORLOG = _table(quote=False)
_LOGITEM = _table(quote=True)
# Surrogates that surrogateescape cannot turn back into a byte (it covers U+DC80-U+DCFF).
_LONE_SURROGATE = re.compile("([\ud800-\udc7f\udd00-\udfff])")


def escape(value: str | bytes, *, wsgi: bool = False) -> str:
    """``value`` as one error-log-safe, printable-ASCII string (``ap_escape_errorlog_item``)."""
    return _escape(value, wsgi, False)


def escape_item(value: str | bytes, *, wsgi: bool = False) -> str:
    """``value`` as a log item that may sit between double quotes (``ap_escape_logitem``)."""
    return _escape(value, wsgi, True)


def _escape(value: str | bytes, wsgi: bool, quote: bool) -> str:
    """Fast path for printable ASCII (nearly every value); else translate the value's bytes."""
    is_text = isinstance(value, str)
    # latin-1 turns bytes into one char per byte, so one table serves bytes and WSGI strings.
    text = value if is_text else bytes(value).decode("latin-1")
    if text.isascii() and text.isprintable() and "\\" not in text and not (quote and '"' in text):
        return text
    table = _LOGITEM if quote else _ERRORLOG
    if not is_text or (wsgi and max(text) <= "\xff"):
        return text.translate(table)
    try:
        return text.encode("utf-8", "surrogateescape").decode("latin-1").translate(table)
    except UnicodeEncodeError:
        # Odd indexes hold the surrogates that stand for no byte; even ones encode cleanly.
        parts = _LONE_SURROGATE.split(text)
        return "".join(
            "\\u%04x" % ord(part) if i % 2 else part.encode("utf-8", "surrogateescape").decode("latin-1")
            .translate(table)
            for i, part in enumerate(parts))
