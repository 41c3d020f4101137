"""Table-driven tests for the CGI/1.1 environment (RFC 3875 §4.1 and Apache's additions)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import pytest

from gunicorn_cgid.environ import (
    EnvOptions,
    build_argv,
    build_environ,
    header_variables,
    headers_from_wsgi,
    native,
    redirect_environ,
    sanitize_name,
    server_name_port,
    split_host,
    to_wire,
)
from gunicorn_cgid.mapping import ScriptTarget

OPTS = EnvOptions(document_root="/srv/www", server_software="gunicorn/27 gunicorn-cgid/0",
                  server_addr="10.0.0.1", server_port="8000")

TARGET = ScriptTarget(script_name="/cgi-bin/s.sh", path_info="", filename="/srv/cgi-bin/s.sh",
                      context_prefix="/cgi-bin/", context_document_root="/srv/cgi-bin/")


def wsgi(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "QUERY_STRING": "",
        "RAW_URI": "/cgi-bin/s.sh",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/cgi-bin/s.sh",
        "wsgi.url_scheme": "http",
        "REMOTE_ADDR": "192.0.2.7",
        "REMOTE_PORT": "50123",
        "HTTP_HOST": "example.com",
    }
    for key, value in overrides.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = value
    return base


# Everything build_environ may produce for the requests below; any other name
# would be something leaking in.
KNOWN = {
    "GATEWAY_INTERFACE", "SERVER_PROTOCOL", "REQUEST_METHOD", "QUERY_STRING", "REQUEST_URI",
    "SCRIPT_NAME", "PATH_INFO", "PATH_TRANSLATED", "SCRIPT_FILENAME", "DOCUMENT_ROOT",
    "CONTEXT_PREFIX", "CONTEXT_DOCUMENT_ROOT", "SERVER_NAME", "SERVER_PORT", "SERVER_ADDR",
    "SERVER_SOFTWARE", "SERVER_SIGNATURE", "REMOTE_ADDR", "REMOTE_PORT", "REQUEST_SCHEME", "PATH",
    "HTTPS", "REMOTE_USER", "AUTH_TYPE", "CONTENT_TYPE", "CONTENT_LENGTH",
}

ABSENT = object()

# (id, WSGI overrides, target overrides, raw headers or None, option overrides, expected)
# An expected value of ABSENT means the variable must not be set.
CASES: list[tuple[str, dict, dict, list[tuple[str, str]] | None, dict, dict[str, Any]]] = [
    ("rfc3875 and apache basics", {}, {}, [("Host", "example.com")], {}, {
        "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "",
        "REQUEST_URI": "/cgi-bin/s.sh",
        "SCRIPT_NAME": "/cgi-bin/s.sh",
        "SCRIPT_FILENAME": "/srv/cgi-bin/s.sh",
        "DOCUMENT_ROOT": "/srv/www",
        "CONTEXT_PREFIX": "/cgi-bin/",
        "CONTEXT_DOCUMENT_ROOT": "/srv/cgi-bin/",
        "SERVER_NAME": "example.com",
        "SERVER_PORT": "8000",
        "SERVER_ADDR": "10.0.0.1",
        "SERVER_SOFTWARE": "gunicorn/27 gunicorn-cgid/0",
        "SERVER_SIGNATURE": "",
        "REMOTE_ADDR": "192.0.2.7",
        "REMOTE_PORT": "50123",
        "REQUEST_SCHEME": "http",
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HTTP_HOST": "example.com",
        "PATH_INFO": ABSENT,
        "PATH_TRANSLATED": ABSENT,
        "HTTPS": ABSENT,
        "REMOTE_USER": ABSENT,
        "AUTH_TYPE": ABSENT,
        "CONTENT_TYPE": ABSENT,
        "CONTENT_LENGTH": ABSENT,
    }),
    ("http/1.0 and other methods", {"SERVER_PROTOCOL": "HTTP/1.0", "REQUEST_METHOD": "DELETE"}, {}, [], {},
     {"SERVER_PROTOCOL": "HTTP/1.0", "REQUEST_METHOD": "DELETE"}),
    ("query string stays raw, request uri raw",
     {"QUERY_STRING": "a=%20b&c=%2F", "RAW_URI": "/cgi-bin/s.sh/x%20y?a=%20b&c=%2F"},
     {"path_info": "/x y"}, [], {},
     {"QUERY_STRING": "a=%20b&c=%2F", "REQUEST_URI": "/cgi-bin/s.sh/x%20y?a=%20b&c=%2F",
      "SCRIPT_NAME": "/cgi-bin/s.sh", "PATH_INFO": "/x y", "PATH_TRANSLATED": "/srv/www/x y"}),
    ("path translated with a root document root", {}, {"path_info": "/a/b"}, [],
     {"document_root": "/"}, {"PATH_INFO": "/a/b", "PATH_TRANSLATED": "/a/b", "DOCUMENT_ROOT": "/"}),
    ("path translated with a trailing slash root", {}, {"path_info": "/a"}, [],
     {"document_root": "/srv/www/"}, {"PATH_TRANSLATED": "/srv/www/a"}),
    ("request uri falls back to the mapped path", {"RAW_URI": None}, {"path_info": "/p"}, [], {},
     {"REQUEST_URI": "/cgi-bin/s.sh/p"}),
    ("utf-8 bytes of a wsgi string", {"QUERY_STRING": "q=\xc3\xa9", "RAW_URI": "/cgi-bin/s.sh?q=\xc3\xa9"},
     {}, [("X-Name", "\xc3\xa9t\xc3\xa9")], {},
     {"QUERY_STRING": "q=\u00e9", "REQUEST_URI": "/cgi-bin/s.sh?q=\u00e9", "HTTP_X_NAME": "\u00e9t\u00e9"}),
    ("undecodable bytes survive as surrogates", {"QUERY_STRING": "\xff"}, {}, [], {},
     {"QUERY_STRING": "\udcff"}),
    ("document root context", {}, {"context_prefix": "", "context_document_root": "/srv/www"}, [], {},
     {"CONTEXT_PREFIX": "", "CONTEXT_DOCUMENT_ROOT": "/srv/www"}),
    ("https", {"wsgi.url_scheme": "https", "HTTP_HOST": "secure.example"}, {}, [], {"server_port": ""},
     {"HTTPS": "on", "REQUEST_SCHEME": "https", "SERVER_NAME": "secure.example", "SERVER_PORT": "443"}),
    ("http without any port", {"HTTP_HOST": "plain.example"}, {}, [], {"server_port": ""},
     {"HTTPS": ABSENT, "REQUEST_SCHEME": "http", "SERVER_PORT": "80"}),
    ("host with port, lower-cased", {"HTTP_HOST": "Example.COM:8080"}, {}, None, {},
     {"SERVER_NAME": "example.com", "SERVER_PORT": "8080", "HTTP_HOST": "Example.COM:8080"}),
    ("ipv6 host keeps brackets", {"HTTP_HOST": "[::1]:8080"}, {}, [], {},
     {"SERVER_NAME": "[::1]", "SERVER_PORT": "8080"}),
    ("ipv6 host without port: local port", {"HTTP_HOST": "[2001:DB8::1]"}, {}, [], {},
     {"SERVER_NAME": "[2001:db8::1]", "SERVER_PORT": "8000"}),
    ("absolute uri wins over host", {"RAW_URI": "http://Abs.Example:81/cgi-bin/s.sh?x", "HTTP_HOST": "h.example"},
     {}, [], {}, {"SERVER_NAME": "abs.example", "SERVER_PORT": "81",
                  "REQUEST_URI": "http://Abs.Example:81/cgi-bin/s.sh?x"}),
    ("absolute uri without port: local port", {"RAW_URI": "HTTP://abs.example/cgi-bin/s.sh"}, {}, [], {},
     {"SERVER_NAME": "abs.example", "SERVER_PORT": "8000"}),
    ("absolute uri userinfo is not the host", {"RAW_URI": "http://user:pw@abs.example:82/cgi-bin/s.sh"},
     {}, [], {}, {"SERVER_NAME": "abs.example", "SERVER_PORT": "82"}),
    ("no host: local address", {"HTTP_HOST": None, "SERVER_PROTOCOL": "HTTP/1.0"}, {}, [], {},
     {"SERVER_NAME": "10.0.0.1", "SERVER_PORT": "8000"}),
    ("markup in host is not a server name", {"HTTP_HOST": "<b>x</b>"}, {}, [], {},
     {"SERVER_NAME": "10.0.0.1", "SERVER_PORT": "8000"}),
    ("bad absolute uri host falls back to host", {"RAW_URI": "http://a..b/cgi-bin/s.sh", "HTTP_HOST": "good.example"},
     {}, [], {}, {"SERVER_NAME": "good.example"}),
    ("remote user and auth type", {"REMOTE_USER": "alice", "AUTH_TYPE": "Basic"}, {}, [], {},
     {"REMOTE_USER": "alice", "AUTH_TYPE": "Basic"}),
    ("empty remote user is not exported", {"REMOTE_USER": ""}, {}, [], {}, {"REMOTE_USER": ABSENT}),
    ("no remote port", {"REMOTE_PORT": None}, {}, [], {}, {"REMOTE_PORT": ABSENT}),
    ("content headers", {"REQUEST_METHOD": "POST"}, {},
     [("Content-Type", "text/plain"), ("Content-Length", "12")], {},
     {"CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "12",
      "HTTP_CONTENT_TYPE": ABSENT, "HTTP_CONTENT_LENGTH": ABSENT}),
    ("chunked body has no length", {"REQUEST_METHOD": "POST", "HTTP_TRANSFER_ENCODING": "chunked"}, {},
     [("Transfer-Encoding", "chunked"), ("Content-Length", "12")], {},
     {"CONTENT_LENGTH": ABSENT, "HTTP_CONTENT_LENGTH": ABSENT, "HTTP_TRANSFER_ENCODING": "chunked"}),
    ("chunked, upper case", {"HTTP_TRANSFER_ENCODING": "gzip, CHUNKED"}, {}, [("Content-Length", "3")], {},
     {"CONTENT_LENGTH": ABSENT}),
    ("headers rebuilt from the wsgi environ",
     {"HTTP_X_FROM_WSGI": "1", "CONTENT_TYPE": "a/b", "CONTENT_LENGTH": "3", "HTTP_PROXY": "evil"}, {}, None, {},
     {"HTTP_X_FROM_WSGI": "1", "CONTENT_TYPE": "a/b", "CONTENT_LENGTH": "3", "HTTP_PROXY": ABSENT}),
    ("authorization needs pass_auth", {}, {},
     [("Authorization", "Basic eDp5"), ("Proxy-Authorization", "Basic eDp5")], {},
     {"HTTP_AUTHORIZATION": ABSENT, "HTTP_PROXY_AUTHORIZATION": ABSENT}),
    ("authorization with pass_auth", {}, {},
     [("Authorization", "Basic eDp5"), ("Proxy-Authorization", "Basic eTp6")], {"pass_auth": True},
     {"HTTP_AUTHORIZATION": "Basic eDp5", "HTTP_PROXY_AUTHORIZATION": "Basic eTp6"}),
    ("setenv and passenv", {}, {}, [("X-Set", "from request")],
     {"passed_env": {"PASSED": "p", "BOTH": "passed"},
      "set_env": {"BOTH": "set", "ONLY_SET": "s", "HTTP_X_SET": "set", "HTTP_X_UNSENT": "set"}},
     {"PASSED": "p", "BOTH": "set", "ONLY_SET": "s", "HTTP_X_SET": "from request", "HTTP_X_UNSENT": "set"}),
    ("common and cgi vars override setenv", {}, {}, [],
     {"set_env": {"SERVER_NAME": "set", "REQUEST_METHOD": "set", "SCRIPT_NAME": "set", "QUERY_STRING": "set",
                  "GATEWAY_INTERFACE": "set", "REMOTE_ADDR": "set", "DOCUMENT_ROOT": "set"}},
     {"SERVER_NAME": "example.com", "REQUEST_METHOD": "GET", "SCRIPT_NAME": "/cgi-bin/s.sh", "QUERY_STRING": "",
      "GATEWAY_INTERFACE": "CGI/1.1", "REMOTE_ADDR": "192.0.2.7", "DOCUMENT_ROOT": "/srv/www"}),
    ("variables the request does not set keep their setenv value", {}, {}, [],
     {"set_env": {"HTTPS": "on", "REMOTE_USER": "proxy-user"}},
     {"HTTPS": "on", "REMOTE_USER": "proxy-user"}),
    ("setenv path wins over cgi_path", {}, {}, [], {"set_env": {"PATH": "/opt/bin"}, "path": "/usr/bin"},
     {"PATH": "/opt/bin"}),
    ("passenv path wins over cgi_path", {}, {}, [], {"passed_env": {"PATH": "/passed/bin"}, "path": "/usr/bin"},
     {"PATH": "/passed/bin"}),
    ("setenv path wins over passenv path", {}, {}, [],
     {"passed_env": {"PATH": "/passed/bin"}, "set_env": {"PATH": "/set/bin"}}, {"PATH": "/set/bin"}),
    ("cgi_path", {}, {}, [], {"path": "/only/this"}, {"PATH": "/only/this"}),
    ("setenv names are sanitised", {}, {}, [], {"set_env": {"my-var": "1", "9LIVES": "2", "a.b c": "3"}},
     {"my_var": "1", "_LIVES": "2", "a_b_c": "3", "my-var": ABSENT}),
]


@pytest.mark.parametrize("environ, target_kw, headers, opts_kw, expected",
                         [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_build_environ(environ, target_kw, headers, opts_kw, expected):
    env = build_environ(wsgi(**environ), replace(TARGET, **target_kw), replace(OPTS, **opts_kw), headers)
    for name, value in expected.items():
        if value is ABSENT:
            assert name not in env, name
        else:
            assert env.get(name) == value, name
    assert all(isinstance(v, str) for v in env.values())


def test_environment_is_built_explicitly(monkeypatch):
    """Nothing of the server's own environment reaches the script."""
    monkeypatch.setenv("CONF_LEAK_CHECK", "leaked")
    monkeypatch.setenv("PATH", "/leaked/path")
    env = build_environ(wsgi(), TARGET, OPTS, [("Host", "example.com"), ("X-A", "1")])
    extra = set(env) - KNOWN - {"HTTP_HOST", "HTTP_X_A"}
    assert not extra
    assert env["PATH"] == OPTS.path
    assert "leaked" not in "".join(env.values())
    assert os.environ["CONF_LEAK_CHECK"] == "leaked"


def test_build_environ_does_not_modify_its_inputs():
    environ = wsgi()
    before = dict(environ)
    set_env = {"A": "1"}
    build_environ(environ, TARGET, replace(OPTS, set_env=set_env), [("X-A", "1")])
    assert environ == before
    assert set_env == {"A": "1"}


# -- request headers ----------------------------------------------------------

# (id, headers, pass_auth, chunked, expected exact result)
HEADER_CASES: list[tuple[str, list[tuple[str, str]], bool, bool, dict[str, str]]] = [
    ("plain", [("X-Foo", "bar"), ("Accept", "*/*")], False, False,
     {"HTTP_X_FOO": "bar", "HTTP_ACCEPT": "*/*"}),
    ("digits and lower case", [("x-2nd-try", "v")], False, False, {"HTTP_X_2ND_TRY": "v"}),
    ("underscore would spoof X-Foo", [("X_Foo", "spoof"), ("X-Foo", "real")], False, False,
     {"HTTP_X_FOO": "real"}),
    ("underscore alone", [("X_Foo", "spoof")], False, False, {}),
    ("dot", [("X.Foo", "v")], False, False, {}),
    ("space", [("X Foo", "v")], False, False, {}),
    ("colon", [("X:Foo", "v")], False, False, {}),
    ("empty name", [("", "v")], False, False, {}),
    ("non-ascii letter upper-cased to ascii", [("X\u00df", "v"), ("\u017fcript", "v")], False, False, {}),
    ("latin-1 byte", [("X-\xe9", "v")], False, False, {}),
    ("nul in name", [("X-A\0", "v")], False, False, {}),
    ("proxy (httpoxy)", [("Proxy", "http://evil:1/"), ("proxy", "x"), ("PROXY", "y")], False, False, {}),
    ("proxy-connection is not proxy", [("Proxy-Connection", "keep-alive")], False, False,
     {"HTTP_PROXY_CONNECTION": "keep-alive"}),
    ("authorization dropped", [("Authorization", "Basic eDp5"), ("proxy-authorization", "x")], False, False, {}),
    ("authorization passed", [("AUTHORIZATION", "Basic eDp5"), ("proxy-authorization", "x")], True, False,
     {"HTTP_AUTHORIZATION": "Basic eDp5", "HTTP_PROXY_AUTHORIZATION": "x"}),
    ("repeats joined with comma", [("Accept", "a"), ("X-A", "1"), ("accept", "b"), ("ACCEPT", "c")], False, False,
     {"HTTP_ACCEPT": "a, b, c", "HTTP_X_A": "1"}),
    ("cookies joined with semicolon", [("Cookie", "a=1"), ("cookie", "b=2; c=3")], False, False,
     {"HTTP_COOKIE": "a=1; b=2; c=3"}),
    ("content type and length", [("content-type", "a/b"), ("CONTENT-LENGTH", "5")], False, False,
     {"CONTENT_TYPE": "a/b", "CONTENT_LENGTH": "5"}),
    ("content length dropped when chunked", [("Content-Length", "5"), ("Content-Type", "a/b")], False, True,
     {"CONTENT_TYPE": "a/b"}),
    ("empty value kept", [("X-Empty", "")], False, False, {"HTTP_X_EMPTY": ""}),
    ("value bytes decoded as utf-8", [("X-U", "\xe2\x82\xac")], False, False, {"HTTP_X_U": "\u20ac"}),
]


@pytest.mark.parametrize("headers, pass_auth, chunked, expected",
                         [pytest.param(*case[1:], id=case[0]) for case in HEADER_CASES])
def test_header_variables(headers, pass_auth, chunked, expected):
    assert header_variables(headers, pass_auth, chunked) == expected


def test_headers_from_wsgi():
    environ = {"HTTP_X_A": "1", "HTTP_ACCEPT": "a,b", "CONTENT_TYPE": "t/t", "CONTENT_LENGTH": "2",
               "wsgi.input": object(), "HTTP_NOT_STR": 5, "REQUEST_METHOD": "GET"}
    assert sorted(headers_from_wsgi(environ)) == sorted([
        ("X-A", "1"), ("ACCEPT", "a,b"), ("Content-Type", "t/t"), ("Content-Length", "2")])


# -- SERVER_NAME / SERVER_PORT ---------------------------------------------------

SPLIT_HOST = [
    ("example.com", ("example.com", "")),
    ("EXAMPLE.com:80", ("example.com", "80")),
    ("  example.com:8080  ", ("example.com", "8080")),
    ("example.com:", ("example.com", "")),
    ("example.com.", ("example.com", "")),
    ("example.com.:81", ("example.com", "81")),
    ("example.com:0080", ("example.com", "80")),
    ("127.0.0.1:9", ("127.0.0.1", "9")),
    ("my_host", ("my_host", "")),
    ("[::1]", ("[::1]", "")),
    ("[::1]:8080", ("[::1]", "8080")),
    ("[::FFFF:192.0.2.1]:1", ("[::ffff:192.0.2.1]", "1")),
    ("[::1]:", ("[::1]", "")),
    # Refused: Apache answers these with 400.
    ("example.com:65536", ("", "")),
    ("example.com:8o", ("", "")),
    ("example.com:\u0661", ("", "")),
    ("a..b", ("", "")),
    ("a/b", ("", "")),
    ("a\\b", ("", "")),
    ("<script>", ("", "")),
    ("a,b", ("", "")),
    ("a b", ("", "")),
    ("", ("", "")),
    (".", ("", "")),
    ("[::1", ("", "")),
    ("[::1]x", ("", "")),
    ("[::1]:x", ("", "")),
    ("[zz::1]", ("", "")),
    ("[]", ("", "")),
    ("::1", ("", "")),
    ("ex\u00e4mple.com", ("", "")),
]


@pytest.mark.parametrize("host, expected", SPLIT_HOST)
def test_split_host(host, expected):
    assert split_host(host) == expected


SERVER_NAME_PORT = [
    ({"HTTP_HOST": "h.example:1"}, ("h.example", "1")),
    ({"HTTP_HOST": "h.example"}, ("h.example", "8000")),
    ({"HTTP_HOST": None}, ("10.0.0.1", "8000")),
    ({"HTTP_HOST": ""}, ("10.0.0.1", "8000")),
    ({"RAW_URI": "https://u.example:444/x", "HTTP_HOST": "h.example:1"}, ("u.example", "444")),
    ({"RAW_URI": "http://u.example?x", "HTTP_HOST": "h.example:1"}, ("u.example", "8000")),
    ({"RAW_URI": "http://u.example#frag", "HTTP_HOST": "h.example:1"}, ("u.example", "8000")),
    ({"RAW_URI": "http:///x", "HTTP_HOST": "h.example:1"}, ("h.example", "1")),
    ({"RAW_URI": "ftp://u.example/x", "HTTP_HOST": "h.example:1"}, ("h.example", "1")),
    ({"RAW_URI": "/http://u.example/x", "HTTP_HOST": "h.example:1"}, ("h.example", "1")),
    ({"HTTP_HOST": "bad host"}, ("10.0.0.1", "8000")),
]


@pytest.mark.parametrize("environ, expected", SERVER_NAME_PORT)
def test_server_name_port(environ, expected):
    assert server_name_port(wsgi(**environ), OPTS) == expected


# -- argv ---------------------------------------------------------------------

ARGV = [
    ("", []),
    ("a=b", []),
    ("word", ["word"]),
    ("foo+bar", ["foo", "bar"]),
    ("a%20b+c%2Bd", ["a b", "c+d"]),
    ("x=1+y", []),
    ("a+b=c", []),
    ("a++b", ["a", "", "b"]),
    ("+", ["", ""]),
    ("%3Bls+-la+%60id%60+%24HOME", [";ls", "-la", "`id`", "$HOME"]),
    ("%C3%A9t%C3%A9", ["\u00e9t\u00e9"]),
    ("%FF", ["\udcff"]),
    ("cut%00here+next", ["cut", "next"]),
    ("%zz+%4", ["%zz", "%4"]),
    ("%3D", ["="]),
]


@pytest.mark.parametrize("query, words", ARGV)
def test_build_argv(query, words):
    assert build_argv("/srv/cgi-bin/s.sh", query) == ["/srv/cgi-bin/s.sh", *words]


# -- internal redirects -----------------------------------------------------------

def test_redirect_environ():
    previous = {"SCRIPT_NAME": "/cgi-bin/a.sh", "PATH_INFO": "/p q", "QUERY_STRING": "x=1",
                "REQUEST_METHOD": "POST", "HTTP_X_A": "1", "REDIRECT_STATUS": "200"}
    out = redirect_environ(previous)
    assert out == {
        "REDIRECT_SCRIPT_NAME": "/cgi-bin/a.sh",
        "REDIRECT_PATH_INFO": "/p q",
        "REDIRECT_QUERY_STRING": "x=1",
        "REDIRECT_REQUEST_METHOD": "POST",
        "REDIRECT_HTTP_X_A": "1",
        "REDIRECT_REDIRECT_STATUS": "200",
        "REDIRECT_URL": "/cgi-bin/a.sh/p q",
        "REDIRECT_STATUS": "200",
    }


@pytest.mark.parametrize("previous, url, query", [
    ({"SCRIPT_NAME": "/cgi-bin/a.sh", "QUERY_STRING": ""}, "/cgi-bin/a.sh", ""),
    ({"SCRIPT_NAME": "/cgi-bin/a.sh", "QUERY_STRING": "q"}, "/cgi-bin/a.sh", "q"),
    ({}, "", None),
])
def test_redirect_environ_url_and_query(previous, url, query):
    out = redirect_environ(previous, status=404)
    assert out["REDIRECT_URL"] == url
    assert out.get("REDIRECT_QUERY_STRING") == query
    assert out["REDIRECT_STATUS"] == "404"


def test_redirect_environ_from_a_built_environment():
    env = build_environ(wsgi(QUERY_STRING="a=1", RAW_URI="/cgi-bin/s.sh/x?a=1"),
                        replace(TARGET, path_info="/x"), OPTS, [])
    out = redirect_environ(env)
    assert out["REDIRECT_URL"] == "/cgi-bin/s.sh/x"
    assert out["REDIRECT_QUERY_STRING"] == "a=1"
    assert out["REDIRECT_REQUEST_URI"] == "/cgi-bin/s.sh/x?a=1"
    assert all(name.startswith("REDIRECT_") for name in out)


# -- names and values -------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("PLAIN", "PLAIN"),
    ("lower_ok", "lower_ok"),
    ("with-dash", "with_dash"),
    ("a.b:c d", "a_b_c_d"),
    ("1ST", "_ST"),
    ("12", "_2"),
    ("\u00e9t\u00e9", "_t_"),
    ("", ""),
])
def test_sanitize_name(name, expected):
    assert sanitize_name(name) == expected


@pytest.mark.parametrize("value, expected", [
    ("plain", "plain"),
    ("\xc3\xa9", "\u00e9"),
    ("\xff\xfe", "\udcff\udcfe"),
    ("already \u20ac", "already \u20ac"),
])
def test_native(value, expected):
    assert native(value) == expected


def test_to_wire():
    env = {
        "A": "1",
        "U": native("\xc3\xa9\xff"),
        "NUL_VALUE": "x\0y",
        "NUL\0NAME": "x",
        "EQ=NAME": "x",
        "": "empty name",
        "LONE": "\ud800",
        "EMPTY": "",
    }
    assert to_wire(env) == (b"A=1", b"U=\xc3\xa9\xff", b"EMPTY=")


def test_to_wire_of_a_built_environment_round_trips():
    env = build_environ(wsgi(QUERY_STRING="q=\xff"), TARGET, OPTS, [("X-B", "\xfe\x00")])
    wire = dict(item.split(b"=", 1) for item in to_wire(env))
    assert wire[b"QUERY_STRING"] == b"q=\xff"
    assert b"HTTP_X_B" not in wire  # a NUL cannot reach exec
    assert wire[b"GATEWAY_INTERFACE"] == b"CGI/1.1"
