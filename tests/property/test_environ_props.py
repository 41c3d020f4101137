"""Property tests for the CGI environment: whatever the client sends, the
script's environment stays well-formed and free of spoofed names."""

from __future__ import annotations

import re
from urllib.parse import quote

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gunicorn_cgid.environ import (
    EnvOptions,
    build_argv,
    build_environ,
    header_variables,
    native,
    split_host,
    to_wire,
    to_wire_each,
)
from gunicorn_cgid.mapping import ScriptTarget

OPTS = EnvOptions(document_root="/srv/www", server_software="test", server_addr="10.0.0.1", server_port="8000",
                  set_env={"SET-ME": "1", "PATH": "/bin"}, passed_env={"PASSED": "2"})
TARGET = ScriptTarget("/cgi-bin/s.sh", "/p", "/srv/cgi-bin/s.sh", "/cgi-bin/", "/srv/cgi-bin/")

_EXPORTED_NAME = re.compile(r"HTTP_[A-Z0-9_]+|CONTENT_TYPE|CONTENT_LENGTH")
_ENV_NAME = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")

# Header names: real-looking ones, near misses and anything at all.
_header_name = st.one_of(
    st.sampled_from(["Host", "Cookie", "Proxy", "proxy", "Authorization", "Proxy-Authorization",
                     "Content-Type", "Content-Length", "X_Foo", "X-Foo", "x-foo", "Transfer-Encoding",
                     "X\u00df", "\u017fcript", "X.Y", "X Y", "", "HTTP_X", "\u0130D"]),
    st.text(alphabet="abcXYZ019-_.: \t\0", max_size=12),
    st.text(max_size=12),
)
# Header values as a WSGI server hands them over (one char per byte), and beyond.
_header_value = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=30),
    st.text(max_size=30),
)
_headers = st.lists(st.tuples(_header_name, _header_value), max_size=12)
_latin1 = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=40)


@given(_headers, st.booleans(), st.booleans())
def test_exported_names_are_safe(headers, pass_auth, chunked):
    out = header_variables(headers, pass_auth, chunked)
    valid = {name.upper() for name, _ in headers if re.fullmatch(r"[A-Za-z0-9-]+", name)}
    for key in out:
        assert _EXPORTED_NAME.fullmatch(key), key
        assert not key.startswith("HTTP_CONTENT_")
        assert key != "HTTP_PROXY"
        if not pass_auth:
            assert key not in ("HTTP_AUTHORIZATION", "HTTP_PROXY_AUTHORIZATION")
        if chunked:
            assert key != "CONTENT_LENGTH"
        # Every exported name comes from a header whose name was made of [A-Za-z0-9-].
        if key.startswith("HTTP_"):
            assert any(name.replace("-", "_") == key[5:] for name in valid), key


@given(_headers)
def test_every_valid_header_is_exported_once(headers):
    out = header_variables(headers, True, False)
    names = [name for name, _ in headers if re.fullmatch(r"[A-Za-z0-9-]+", name) and name.upper() != "PROXY"]
    for name in names:
        key = name.upper().replace("-", "_")
        key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
        assert key in out
        values = [native(v) for n, v in headers if n.upper() == name.upper()]
        joiner = "; " if key == "HTTP_COOKIE" else ", "
        assert out[key] == joiner.join(values)


@settings(max_examples=300)
@given(_headers, _latin1, _latin1, _latin1, st.sampled_from(["http", "https"]), st.booleans())
def test_build_environ_never_raises_and_wire_is_clean(headers, host, raw_uri, query, scheme, pass_auth):
    environ = {"REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1", "QUERY_STRING": query,
               "RAW_URI": raw_uri, "HTTP_HOST": host, "wsgi.url_scheme": scheme, "REMOTE_ADDR": "192.0.2.1",
               "HTTP_TRANSFER_ENCODING": "chunked" if "chunked" in query else ""}
    opts = EnvOptions(**{**{f: getattr(OPTS, f) for f in OPTS.__dataclass_fields__}, "pass_auth": pass_auth})
    env = build_environ(environ, TARGET, opts, headers)
    assert env["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert env["SERVER_PORT"].isdigit() and 0 <= int(env["SERVER_PORT"]) <= 65535
    assert env["SET_ME"] == "1" and env["PATH"] == "/bin"
    wire = to_wire(env)
    names = set()
    for item in wire:
        assert b"\0" not in item
        name, sep, _value = item.partition(b"=")
        assert sep and _ENV_NAME.fullmatch(name), item
        names.add(name)
    assert len(names) == len(wire)
    # Only entries that exec cannot carry are left out.
    for name, value in env.items():
        if "\0" not in value:
            assert name.encode() in names, name


@given(_latin1)
def test_server_name_is_sane(host):
    name, port = split_host(host)
    if name:
        assert re.fullmatch(r"[a-z0-9._-]+|\[[0-9a-f:.]+\]", name), name
        assert not name.endswith(".")
        assert ".." not in name
    else:
        assert port == ""
    if port:
        assert port.isdigit() and str(int(port)) == port and int(port) <= 65535


@given(st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,3}", fullmatch=True),
       st.one_of(st.none(), st.integers(0, 65535)))
def test_valid_hosts_round_trip(name, port):
    host = name if port is None else "%s:%d" % (name, port)
    assert split_host(host.upper()) == (name, "" if port is None else str(port))


@given(st.lists(st.text(max_size=8), min_size=1, max_size=8))
def test_isindex_words_round_trip(words):
    assume(all("\0" not in w for w in words))
    query = "+".join(quote(w, safe="") for w in words)
    assume(query)  # an empty query has no words at all
    assert build_argv("/s", query) == ["/s", *words]


@given(_latin1)
def test_argv_never_carries_nul_and_respects_equals(query):
    argv = build_argv("/s", query)
    assert argv[0] == "/s"
    assert all("\0" not in a for a in argv)
    if not query or "=" in query:
        assert argv == ["/s"]
    else:
        assert len(argv) == query.count("+") + 2


@given(st.binary(max_size=40))
def test_native_round_trips_bytes(raw):
    value = native(raw.decode("latin-1"))
    assert to_wire({"V": value}) == (() if b"\0" in raw else (b"V=" + raw,))



@given(st.dictionaries(st.text(max_size=6), st.text(max_size=8), max_size=8))
def test_to_wire_in_one_piece_is_to_wire_entry_by_entry(env):
    # Names and values with NUL, "=", lone surrogates: the one-encode path
    # must drop exactly what the entry-by-entry one drops.
    assert to_wire(env) == to_wire_each(env)
