"""Table-driven tests for conditional request evaluation."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from gunicorn_cgid.conditional import evaluate

NOW = 1_700_000_000.0
LM = "Sun, 06 Nov 1994 08:49:37 GMT"
LM_TS = 784111777
BEFORE = "Sun, 06 Nov 1994 08:49:36 GMT"
AFTER = "Sun, 06 Nov 1994 08:49:38 GMT"
FUTURE = formatdate(NOW + 3600, usegmt=True)
NOW_DATE = formatdate(NOW, usegmt=True)
JUST_BEFORE_NOW = formatdate(NOW - 1, usegmt=True)

# (id, method, request headers, etag, last_modified, expected)
CASES: list[tuple[str, str, dict[str, str], str | None, str | None, int | None]] = [
    ("no conditions", "GET", {}, '"a"', LM, None),
    ("no validators", "GET", {"HTTP_IF_NONE_MATCH": '"a"'}, None, None, None),

    # If-Match: strong comparison.
    ("if-match hit", "GET", {"HTTP_IF_MATCH": '"a"'}, '"a"', None, None),
    ("if-match miss", "GET", {"HTTP_IF_MATCH": '"b"'}, '"a"', None, 412),
    ("if-match list hit", "GET", {"HTTP_IF_MATCH": '"x", "y" ,"a"'}, '"a"', None, None),
    ("if-match comma inside tag", "GET", {"HTTP_IF_MATCH": '"a,b"'}, '"a,b"', None, None),
    ("if-match comma inside tag miss", "GET", {"HTTP_IF_MATCH": '"a,b"'}, '"a"', None, 412),
    ("if-match weak request tag", "GET", {"HTTP_IF_MATCH": 'W/"a"'}, '"a"', None, 412),
    ("if-match weak response tag", "GET", {"HTTP_IF_MATCH": '"a"'}, 'W/"a"', None, 412),
    ("if-match star with etag", "GET", {"HTTP_IF_MATCH": "*"}, '"a"', None, None),
    ("if-match star without etag", "GET", {"HTTP_IF_MATCH": "*"}, None, LM, 412),
    ("if-match without etag", "GET", {"HTTP_IF_MATCH": '"a"'}, None, LM, 412),
    ("if-match unquoted script etag", "GET", {"HTTP_IF_MATCH": "abc"}, "abc", None, None),
    ("if-match hit skips if-unmodified-since", "GET",
     {"HTTP_IF_MATCH": '"a"', "HTTP_IF_UNMODIFIED_SINCE": BEFORE}, '"a"', LM, None),
    ("if-match miss beats if-none-match", "GET",
     {"HTTP_IF_MATCH": '"b"', "HTTP_IF_NONE_MATCH": '"a"'}, '"a"', None, 412),
    ("if-match hit then if-none-match hit", "GET",
     {"HTTP_IF_MATCH": '"a"', "HTTP_IF_NONE_MATCH": '"a"'}, '"a"', None, 304),

    # If-Unmodified-Since.
    ("ius modified after", "GET", {"HTTP_IF_UNMODIFIED_SINCE": BEFORE}, None, LM, 412),
    ("ius same second", "GET", {"HTTP_IF_UNMODIFIED_SINCE": LM}, None, LM, None),
    ("ius later", "GET", {"HTTP_IF_UNMODIFIED_SINCE": AFTER}, None, LM, None),
    ("ius without last-modified ignored", "GET",
     {"HTTP_IF_UNMODIFIED_SINCE": BEFORE}, '"a"', None, None),
    ("ius invalid date ignored", "GET",
     {"HTTP_IF_UNMODIFIED_SINCE": "yesterday"}, None, LM, None),
    ("ius list of dates ignored", "GET",
     {"HTTP_IF_UNMODIFIED_SINCE": f"{BEFORE}, {BEFORE}"}, None, LM, None),
    ("ius on POST", "POST", {"HTTP_IF_UNMODIFIED_SINCE": BEFORE}, None, LM, 412),

    # If-None-Match: weak comparison.
    ("inm hit", "GET", {"HTTP_IF_NONE_MATCH": '"a"'}, '"a"', None, 304),
    ("inm hit head", "HEAD", {"HTTP_IF_NONE_MATCH": '"a"'}, '"a"', None, 304),
    ("inm hit post", "POST", {"HTTP_IF_NONE_MATCH": '"a"'}, '"a"', None, 412),
    ("inm miss", "GET", {"HTTP_IF_NONE_MATCH": '"b"'}, '"a"', None, None),
    ("inm weak request tag", "GET", {"HTTP_IF_NONE_MATCH": 'W/"a"'}, '"a"', None, 304),
    ("inm weak response tag", "GET", {"HTTP_IF_NONE_MATCH": '"a"'}, 'W/"a"', None, 304),
    ("inm both weak", "GET", {"HTTP_IF_NONE_MATCH": 'W/"a"'}, 'W/"a"', None, 304),
    ("inm list", "GET", {"HTTP_IF_NONE_MATCH": '"x", W/"a"'}, '"a"', None, 304),
    ("inm list no spaces", "GET", {"HTTP_IF_NONE_MATCH": '"x",W/"y","a"'}, '"a"', None, 304),
    ("inm quotes matter", "GET", {"HTTP_IF_NONE_MATCH": '"a"'}, "a", None, None),
    ("inm unterminated tag", "GET", {"HTTP_IF_NONE_MATCH": '"a'}, '"a"', None, None),
    ("inm star", "GET", {"HTTP_IF_NONE_MATCH": "*"}, None, None, 304),
    ("inm star post", "POST", {"HTTP_IF_NONE_MATCH": "*"}, '"a"', None, 412),
    ("inm without etag", "GET", {"HTTP_IF_NONE_MATCH": '"a"'}, None, LM, None),
    ("inm miss ignores ims", "GET",
     {"HTTP_IF_NONE_MATCH": '"b"', "HTTP_IF_MODIFIED_SINCE": AFTER}, '"a"', LM, None),
    ("inm hit with stale ims", "GET",
     {"HTTP_IF_NONE_MATCH": '"a"', "HTTP_IF_MODIFIED_SINCE": BEFORE}, '"a"', LM, 304),
    ("ius fail beats inm hit", "GET",
     {"HTTP_IF_UNMODIFIED_SINCE": BEFORE, "HTTP_IF_NONE_MATCH": '"a"'}, '"a"', LM, 412),

    # If-Modified-Since.
    ("ims not modified", "GET", {"HTTP_IF_MODIFIED_SINCE": LM}, None, LM, 304),
    ("ims later", "GET", {"HTTP_IF_MODIFIED_SINCE": AFTER}, None, LM, 304),
    ("ims earlier", "GET", {"HTTP_IF_MODIFIED_SINCE": BEFORE}, None, LM, None),
    ("ims head", "HEAD", {"HTTP_IF_MODIFIED_SINCE": LM}, None, LM, 304),
    ("ims ignored on post", "POST", {"HTTP_IF_MODIFIED_SINCE": LM}, None, LM, None),
    ("ims without last-modified", "GET", {"HTTP_IF_MODIFIED_SINCE": LM}, '"a"', None, None),
    ("ims invalid date", "GET", {"HTTP_IF_MODIFIED_SINCE": "not a date"}, None, LM, None),
    ("ims empty", "GET", {"HTTP_IF_MODIFIED_SINCE": ""}, None, LM, None),
    ("ims in the future ignored", "GET", {"HTTP_IF_MODIFIED_SINCE": FUTURE}, None, LM, None),
    ("ims rfc850", "GET",
     {"HTTP_IF_MODIFIED_SINCE": "Sunday, 06-Nov-94 08:49:37 GMT"}, None, LM, 304),
    ("ims asctime", "GET",
     {"HTTP_IF_MODIFIED_SINCE": "Sun Nov  6 08:49:37 1994"}, None, LM, 304),
    ("last-modified invalid ignored", "GET",
     {"HTTP_IF_MODIFIED_SINCE": LM}, None, "garbage", None),

    # Last-Modified in the future is clamped to now.
    ("future lm clamped, ims now", "GET", {"HTTP_IF_MODIFIED_SINCE": NOW_DATE}, None, FUTURE, 304),
    ("future lm clamped, ims before now", "GET",
     {"HTTP_IF_MODIFIED_SINCE": JUST_BEFORE_NOW}, None, FUTURE, None),
    ("future lm clamped, ius now", "GET",
     {"HTTP_IF_UNMODIFIED_SINCE": NOW_DATE}, None, FUTURE, None),
    ("future lm clamped, ius before now", "GET",
     {"HTTP_IF_UNMODIFIED_SINCE": JUST_BEFORE_NOW}, None, FUTURE, 412),
]


@pytest.mark.parametrize(("method", "headers", "etag", "last_modified", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_evaluate(method: str, headers: dict[str, str], etag: str | None,
                  last_modified: str | None, expected: int | None) -> None:
    assert evaluate(method, headers, etag, last_modified, NOW) == expected


def test_dates_compare_at_second_granularity() -> None:
    headers = {"HTTP_IF_MODIFIED_SINCE": LM}
    assert evaluate("GET", headers, None, LM, LM_TS + 0.9) == 304
    # now earlier than the Last-Modified: the clamp makes it "now", and the
    # If-Modified-Since date is then in the future, so it is ignored.
    assert evaluate("GET", headers, None, LM, LM_TS - 10.0) is None
