"""Properties of the checks made before any script runs (admission)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gunicorn_cgid.admission import MAX_CONTENT_LENGTH, Refused, check, parse_content_length, valid_host

REG_NAME_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;="
reg_names = st.text(alphabet=REG_NAME_CHARS, min_size=1, max_size=60)
ports = st.one_of(st.just(""), st.integers(0, 65535).map(lambda p: ":%d" % p))


@given(reg_names, ports)
def test_every_reg_name_with_a_port_is_a_valid_host(name, port):
    assert valid_host(name + port)


@given(st.text(min_size=1, max_size=40), st.sampled_from(list(" /\\?#@\"<>{}|^`\x00\r\n\t\x7f")))
def test_a_host_with_a_forbidden_character_is_refused(text, bad):
    value = text[: len(text) // 2] + bad + text[len(text) // 2:]
    assert not valid_host(value)
    with pytest.raises(Refused) as info:
        check("GET", "HTTP/1.1", value, None, 0, False)
    assert info.value.status == 400


@given(st.integers(0, MAX_CONTENT_LENGTH))
def test_content_length_round_trips(n):
    assert parse_content_length(str(n)) == n


@given(st.integers(MAX_CONTENT_LENGTH + 1, 10**40))
def test_content_length_past_64_bits_is_400(n):
    with pytest.raises(Refused) as info:
        parse_content_length(str(n))
    assert info.value.status == 400


@given(st.text(max_size=20).filter(lambda t: not t.strip(" \t").isdigit() or not t.strip(" \t").isascii()))
def test_content_length_that_is_not_plain_decimal_is_400(text):
    with pytest.raises(Refused):
        parse_content_length(text)


@given(st.integers(1, 10**12), st.integers(0, 10**12))
def test_the_limit_holds_exactly(limit, length):
    if length > limit:
        with pytest.raises(Refused) as info:
            check("POST", "HTTP/1.1", "h", str(length), limit, False)
        assert info.value.status == 413
    else:
        check("POST", "HTTP/1.1", "h", str(length), limit, False)
    check("POST", "HTTP/1.1", "h", str(length), 0, False)  # 0: unlimited


@pytest.mark.parametrize("method, pass_trace, refused", [
    ("TRACE", False, True), ("TRACE", True, False), ("CONNECT", True, True), ("GET", False, False),
])
def test_methods(method, pass_trace, refused):
    if refused:
        with pytest.raises(Refused) as info:
            check(method, "HTTP/1.1", "h", None, 0, pass_trace)
        assert info.value.status == 405 and info.value.headers[0][0] == "Allow"
    else:
        check(method, "HTTP/1.1", "h", None, 0, pass_trace)


def test_missing_host_is_refused_only_for_http_1_1():
    with pytest.raises(Refused):
        check("GET", "HTTP/1.1", None, None, 0, False)
    check("GET", "HTTP/1.0", None, None, 0, False)
