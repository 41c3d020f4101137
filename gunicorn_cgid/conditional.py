"""Evaluation of conditional request headers against a script's validators.

Runs in the gunicorn worker once a script's header block is parsed. Follows
RFC 9110 §13.2.2 (precedence) and Apache httpd 2.4's ``ap_meets_conditions``
(modules/http/http_protocol.c); pure, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import timezone
from email.utils import parsedate_to_datetime

__all__ = ["evaluate"]

_ETag = tuple[bool, str]  # (weak, opaque-tag including its quotes)


def evaluate(method: str, request_headers: Mapping[str, str], etag: str | None,
             last_modified: str | None, now: float) -> int | None:
    """Return 304 or 412 if the request's preconditions say so, else None.

    ``request_headers`` uses WSGI environ keys (``HTTP_IF_MATCH``...), ``etag``
    and ``last_modified`` are the script's header values, ``now`` a Unix time.
    """
    safe = method.upper() in ("GET", "HEAD")
    mtime = _parse_date(last_modified) if last_modified is not None else None
    if mtime is not None:
        # ap_rationalize_mtime(): a modification time in the future is
        # treated as "now", otherwise a client could cache it forever.
        mtime = min(mtime, math.floor(now))
    current = _parse_own_etag(etag)

    if_match = request_headers.get("HTTP_IF_MATCH")
    if if_match is not None:
        if not _if_match(if_match, current):
            return 412
    else:
        ius = request_headers.get("HTTP_IF_UNMODIFIED_SINCE")
        since = _parse_date(ius) if ius is not None else None
        # Deviation from Apache: without a Last-Modified Apache compares
        # against the request time, so any past date fails; RFC 9110
        # §13.1.4 says the field is ignored then, which is done here.
        if since is not None and mtime is not None and mtime > since:
            return 412

    if_none_match = request_headers.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        if _if_none_match_hits(if_none_match, current):
            return 304 if safe else 412
        return None

    ims = request_headers.get("HTTP_IF_MODIFIED_SINCE")
    if ims is not None and safe and mtime is not None:
        since = _parse_date(ims)
        # Apache ignores a date later than the request time: the client
        # cannot have seen a version from the future (ap_condition_if_modified_since).
        if since is not None and since <= now and mtime <= since:
            return 304
    return None


def _if_match(value: str, current: _ETag | None) -> bool:
    if value.strip() == "*":
        # Deviation from Apache: Apache lets "*" match any response; here it
        # needs an ETag from the script, so a script that cannot identify
        # its representation fails the precondition.
        return current is not None
    if current is None or current[0]:
        return False
    # Strong comparison (RFC 9110 §8.8.3.2): neither side may be weak.
    return any(not weak and tag == current[1] for weak, tag in _parse_etag_list(value))


def _if_none_match_hits(value: str, current: _ETag | None) -> bool:
    if value.strip() == "*":
        # The script produced a representation, so "*" matches (RFC 9110
        # §13.1.2; Apache does the same).
        return True
    if current is None:
        return False
    # Weak comparison: the W/ prefix is ignored on both sides.
    return any(tag == current[1] for _weak, tag in _parse_etag_list(value))


def _parse_own_etag(value: str | None) -> _ETag | None:
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.startswith("W/"):
        return True, text[2:]
    return False, text


def _parse_etag_list(value: str) -> list[_ETag]:
    """Split an If-Match/If-None-Match list; commas inside quotes are part of a tag."""
    tags: list[_ETag] = []
    i, size = 0, len(value)
    while i < size:
        if value[i] in " \t,":
            i += 1
            continue
        weak = value.startswith("W/", i)
        if weak:
            i += 2
        if i < size and value[i] == '"':
            close = value.find('"', i + 1)
            if close < 0:
                break  # unterminated tag: nothing after it can be trusted
            tags.append((weak, value[i:close + 1]))
            i = close + 1
        else:
            # Tolerate unquoted tags from sloppy clients; they can still
            # equal an unquoted ETag a script sent.
            comma = value.find(",", i)
            end = size if comma < 0 else comma
            token = value[i:end].strip(" \t")
            if token:
                tags.append((weak, token))
            i = end
    return tags


def _parse_date(value: str) -> int | None:
    """Seconds since the epoch for an HTTP-date, or None if it is not one."""
    # A second comma means a list of dates, which RFC 9110 §13.1.3/§13.1.4
    # say to ignore (IMF-fixdate and rfc850-date hold one, asctime none).
    if value.count(",") > 1:
        return None
    try:
        parsed = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        # asctime-date carries no zone; HTTP dates are always GMT.
        parsed = parsed.replace(tzinfo=timezone.utc)
    try:
        return math.floor(parsed.timestamp())
    except (OverflowError, ValueError, OSError):
        return None
