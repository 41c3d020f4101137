"""The CGI/1.1 environment of a script, built from the WSGI environ: RFC 3875 §4.1.

Pure functions, run in the worker. The order below follows RFC 3875 §4.1,
then the variables Apache adds (``ap_add_common_vars``/``ap_add_cgi_vars``).
Nothing of gunicorn's own process environment leaks in: only what
``cgi_pass_env`` names (PassEnv) and what ``cgi_env`` sets (SetEnv).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from gunicorn_cgid.mapping import ScriptTarget

# Apache exports a request header only if its name is made of these; "X_Foo"
# would otherwise become HTTP_X_FOO and spoof "X-Foo" (util_script.c).
_VALID_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]+\Z")
# httpoxy: a client-sent "Proxy" header must never become HTTP_PROXY.
_NEVER_EXPORTED = frozenset(("PROXY",))
_AUTH_HEADERS = frozenset(("AUTHORIZATION", "PROXY-AUTHORIZATION"))
_ENV_NAME_BAD = re.compile(r"[^A-Za-z0-9_]")
# What SERVER_NAME may be: a DNS name or IPv4 address (Apache's strict host
# check, plus "_", which container host names use), or a bracketed IPv6 literal.
_HOST_NAME = re.compile(r"[a-z0-9_-][a-z0-9._-]*\Z")
_IPV6_LITERAL = re.compile(r"\[[0-9a-f:.]+\]\Z")


@dataclass(frozen=True, slots=True)
class EnvOptions:
    document_root: str
    server_software: str
    server_addr: str = ""
    server_port: str = ""          # the local port, used when Host has none
    path: str = "/usr/local/bin:/usr/bin:/bin"
    set_env: Mapping[str, str] = field(default_factory=dict)      # cgi_env (SetEnv)
    passed_env: Mapping[str, str] = field(default_factory=dict)   # cgi_pass_env values (PassEnv)
    pass_auth: bool = False        # cgi_pass_auth (CGIPassAuth)


def native(value: str) -> str:
    """A WSGI string (one char per byte, RFC 3333) as the str whose UTF-8 encoding gives those bytes.

    Undecodable bytes survive as surrogates, so ``to_wire`` restores them exactly.
    """
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        return value
    return raw.decode("utf-8", "surrogateescape")


def sanitize_name(name: str) -> str:
    """Apache's ap_create_environment: non-alphanumerics become '_', so does a leading digit."""
    name = _ENV_NAME_BAD.sub("_", name)
    if name[:1].isdigit():
        name = "_" + name[1:]
    return name


def header_variables(headers: Iterable[tuple[str, str]], pass_auth: bool,
                     chunked: bool) -> dict[str, str]:
    """HTTP_* (and CONTENT_TYPE/CONTENT_LENGTH) from the raw request headers.

    Repeated headers are joined with ", ", Cookie with "; " so that cookie
    parsers keep working (RFC 6265 §5.4). Deviation from Apache: Apache joins
    Cookie with ", " on HTTP/1.1, which cookie parsers misread.
    """
    out: dict[str, str] = {}
    for raw_name, value in headers:
        # Checked before upper-casing: str.upper() maps some non-ASCII letters
        # to ASCII ("\u00df" -> "SS", "\u017f" -> "S"), which would smuggle names in.
        if not _VALID_HEADER_NAME.match(raw_name):
            continue
        name = raw_name.upper()
        if name in _NEVER_EXPORTED:
            continue
        if name in _AUTH_HEADERS and not pass_auth:
            continue
        if name == "CONTENT-TYPE":
            key = "CONTENT_TYPE"
        elif name == "CONTENT-LENGTH":
            if chunked:
                continue  # a chunked body has no length (RFC 9112 §6.3)
            key = "CONTENT_LENGTH"
        else:
            key = "HTTP_" + name.replace("-", "_")
        value = native(value)
        if key in out:
            out[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            out[key] = value
    return out


def headers_from_wsgi(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Headers rebuilt from a WSGI environ when the raw list is not available.

    gunicorn has joined repeats with "," and dropped names with "_" already.
    """
    out = []
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            out.append((key[5:].replace("_", "-"), value))
    if "CONTENT_TYPE" in environ:
        out.append(("Content-Type", environ["CONTENT_TYPE"]))
    if "CONTENT_LENGTH" in environ:
        out.append(("Content-Length", environ["CONTENT_LENGTH"]))
    return out


def split_host(host: str) -> tuple[str, str]:
    """Host header or authority to (lower-cased name, port); IPv6 keeps its brackets.

    A host Apache would answer with 400 gives ("", ""), so the caller falls
    back to the next source instead of handing it to the script as
    SERVER_NAME: characters other than letters, digits, ".", "-" and "_"
    (Apache's strict check also refuses "_"), "..", a bad IPv6 literal, a port
    that is not a number up to 65535. One trailing dot is removed and the
    port loses leading zeros, as Apache does (vhost.c ``fix_hostname``).
    """
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return "", ""
        name, rest = host[: end + 1], host[end + 1:]
        if not _IPV6_LITERAL.match(name):
            return "", ""
        if not rest:
            return name, ""
        if not rest.startswith(":"):
            return "", ""
        port = rest[1:]
    else:
        name, sep, port = host.rpartition(":")
        if not sep:
            name, port = host, ""
        if name.endswith("."):
            name = name[:-1]
        if not _HOST_NAME.match(name) or ".." in name:
            return "", ""
    if not port:
        return name, ""
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        return "", ""
    return name, str(int(port))


def server_name_port(environ: Mapping[str, Any], opts: EnvOptions) -> tuple[str, str]:
    """SERVER_NAME/SERVER_PORT as Apache with UseCanonicalName Off.

    The host of an absolute request URI wins, then the Host header, then the
    local address; the port comes from the same place, else the local port.
    """
    raw_uri = str(environ.get("RAW_URI", ""))
    candidates = []
    lowered = raw_uri[:8].lower()
    if lowered.startswith("http://") or lowered.startswith("https://"):
        authority = raw_uri.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]
        candidates.append(authority.rpartition("@")[2])
    candidates.append(str(environ.get("HTTP_HOST", "")))
    for authority in candidates:
        if authority:
            name, port = split_host(authority)
            if name:
                return name, port or opts.server_port
    return opts.server_addr, opts.server_port


def build_environ(environ: Mapping[str, Any], target: ScriptTarget, opts: EnvOptions,
                  headers: Iterable[tuple[str, str]] | None = None) -> dict[str, str]:
    """The script's complete environment.

    Precedence as Apache's: SetEnv/PassEnv first, the request's variables
    override them (except PATH, which ``cgi_env`` may set), CGI variables last.
    """
    env: dict[str, str] = {}
    for name, value in opts.passed_env.items():
        env[sanitize_name(name)] = value
    for name, value in opts.set_env.items():
        env[sanitize_name(name)] = value
    # ap_add_common_vars takes PATH from the subprocess env (SetEnv, PassEnv)
    # before falling back to the server's own.
    path = env.get("PATH", opts.path)

    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if headers is None:
        headers = headers_from_wsgi(environ)
    env.update(header_variables(headers, opts.pass_auth, chunked))

    env["PATH"] = path
    server_name, server_port = server_name_port(environ, opts)
    scheme = environ.get("wsgi.url_scheme", "http")
    env["SERVER_SIGNATURE"] = ""
    env["SERVER_SOFTWARE"] = opts.server_software
    env["SERVER_NAME"] = server_name
    env["SERVER_ADDR"] = opts.server_addr
    env["SERVER_PORT"] = server_port or ("443" if scheme == "https" else "80")
    env["REMOTE_ADDR"] = str(environ.get("REMOTE_ADDR", ""))
    env["DOCUMENT_ROOT"] = opts.document_root
    env["REQUEST_SCHEME"] = scheme
    env["CONTEXT_PREFIX"] = target.context_prefix
    env["CONTEXT_DOCUMENT_ROOT"] = target.context_document_root
    env["SCRIPT_FILENAME"] = target.filename
    if environ.get("REMOTE_PORT"):
        env["REMOTE_PORT"] = str(environ["REMOTE_PORT"])
    if scheme == "https":
        env["HTTPS"] = "on"
    for name in ("REMOTE_USER", "AUTH_TYPE"):
        value = environ.get(name)
        if isinstance(value, str) and value:
            env[name] = native(value)

    # RFC 3875 §4.1 meta-variables.
    env["GATEWAY_INTERFACE"] = "CGI/1.1"
    env["SERVER_PROTOCOL"] = environ.get("SERVER_PROTOCOL", "HTTP/1.0")
    env["REQUEST_METHOD"] = environ.get("REQUEST_METHOD", "GET")
    env["QUERY_STRING"] = native(environ.get("QUERY_STRING", ""))
    env["REQUEST_URI"] = native(environ.get("RAW_URI", "")) or target.script_name + target.path_info
    env["SCRIPT_NAME"] = target.script_name
    if target.path_info:
        env["PATH_INFO"] = target.path_info
        env["PATH_TRANSLATED"] = opts.document_root.rstrip("/") + target.path_info
    return env


def redirect_environ(previous: Mapping[str, str], status: int = 200) -> dict[str, str]:
    """The REDIRECT_* variables of an internal redirect (Apache's rename_original_env).

    Every variable of the previous request gets the prefix; REDIRECT_URL is
    its decoded path, REDIRECT_STATUS its status. REDIRECT_QUERY_STRING is the
    renamed QUERY_STRING, so it is there (maybe empty) whenever the previous
    request ran a script, as in Apache, where QUERY_STRING is always set.
    """
    out = {"REDIRECT_" + name: value for name, value in previous.items()}
    out["REDIRECT_URL"] = previous.get("SCRIPT_NAME", "") + previous.get("PATH_INFO", "")
    out["REDIRECT_STATUS"] = str(status)
    return out


def build_argv(filename: str, query_string: str) -> list[str]:
    """argv for the script: ISINDEX words from a query without '=' (RFC 3875 §4.4).

    Apache escapes shell metacharacters in those words although no shell runs
    them (ap_escape_shell_cmd); we pass them as they are.
    Deviation from Apache: no backslash escaping, because exec needs none.
    A word is cut at a decoded NUL ("%00"), where Apache's C string ends too;
    empty words are kept, as Apache does.
    """
    argv = [filename]
    if query_string and "=" not in query_string:
        for word in query_string.split("+"):
            argv.append(unquote(word, errors="surrogateescape").partition("\0")[0])
    return argv


def to_wire(env: Mapping[str, str]) -> tuple[bytes, ...]:
    """``NAME=value`` entries for the daemon.

    Entries exec cannot carry are dropped: a NUL anywhere, a name that is
    empty or holds "=", or text with no byte form (a lone surrogate that
    ``native`` did not produce).
    """
    items = [name + "=" + value for name, value in env.items() if name and "=" not in name]
    text = "\0".join(items)
    if items and text.count("\0") == len(items) - 1:  # no entry holds a NUL: all in one encode
        try:
            return tuple(text.encode("utf-8", "surrogateescape").split(b"\0"))
        except UnicodeEncodeError:
            pass
    return to_wire_each(env)


def to_wire_each(env: Mapping[str, str]) -> tuple[bytes, ...]:
    """``to_wire`` entry by entry: for an environment with an entry it must drop."""
    out = []
    for name, value in env.items():
        if not name or "=" in name:
            continue
        try:
            item = ("%s=%s" % (name, value)).encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            continue
        if b"\0" not in item:
            out.append(item)
    return tuple(out)
