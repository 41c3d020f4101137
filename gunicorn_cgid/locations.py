"""Per-location settings: what one ``script_alias`` entry may carry beyond its path.

Apache sets these inside ``<Location>`` or ``<Directory>`` (SetEnv, PassEnv,
Action, RLimit*, suEXEC's user). Here an entry of ``script_alias`` is either a
path or a dict::

    script_alias = {
        "/cgi-bin/": "cgi-bin/",
        "/git/": {
            "path": "/usr/lib/git-core/git-http-backend",
            "env": {"GIT_PROJECT_ROOT": "/srv/git"},
            "timeout": 300,
        },
        "/~alice/": {"path": "/home/alice/cgi-bin/", "user": "alice"},
    }

Keys an entry leaves out take the global setting. Pure: validation only,
used by ``settings`` (so a bad entry stops the start naming it), by the
worker, and by the daemon for the parts it enforces (user, limits).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Entry = dict[str, Any]


def _text(key: str, val: Any) -> str:
    if not isinstance(val, str) or not val or "\0" in val:
        raise ValueError("%s: expected a non-empty string, got %r" % (key, val))
    return val


def _str_map(key: str, val: Any) -> dict[str, str]:
    if not isinstance(val, dict) or not all(isinstance(k, str) and k and isinstance(v, str)
                                            and "\0" not in k + v for k, v in val.items()):
        raise ValueError("%s: expected a dict of strings, got %r" % (key, val))
    return dict(val)


def _str_list(key: str, val: Any) -> list[str]:
    if isinstance(val, str):
        val = [val]
    if not isinstance(val, (list, tuple)) or not all(isinstance(v, str) and v and "\0" not in v for v in val):
        raise ValueError("%s: expected a list of strings, got %r" % (key, val))
    return list(val)


def _seconds(positive: bool) -> Callable[[str, Any], float]:
    def check(key: str, val: Any) -> float:
        if isinstance(val, bool) or not isinstance(val, (int, float)) or math.isnan(val) or math.isinf(val):
            raise ValueError("%s: expected a number of seconds, got %r" % (key, val))
        if val < 0 or (positive and val == 0):
            raise ValueError("%s: expected a number of seconds %s 0, got %r" % (key, ">" if positive else ">=", val))
        return float(val)
    return check


def _count(key: str, val: Any) -> int:
    if isinstance(val, bool) or not isinstance(val, int) or val < 0:
        raise ValueError("%s: expected a whole number >= 0, got %r" % (key, val))
    return val


def _account(key: str, val: Any) -> str | int:
    if isinstance(val, bool) or not isinstance(val, (str, int)) or val == "" or (isinstance(val, int) and val < 0):
        raise ValueError("%s: expected a name or a numeric id, got %r" % (key, val))
    return val


def _interpreters(key: str, val: Any) -> dict[str, str]:
    table = _str_map(key, val)
    out: dict[str, str] = {}
    for ext, program in table.items():
        if not ext.startswith("."):
            raise ValueError("%s: extension %r must start with '.'" % (key, ext))
        out[ext.lower()] = program  # extensions match case-insensitively
    return out


def _directories(key: str, val: Any) -> list[str]:
    dirs = _str_list(key, val)
    for d in dirs:
        if not d.startswith("/"):
            raise ValueError("%s: %r must be an absolute directory" % (key, d))
    return dirs


# key -> (what it sets, validator)
KEYS: dict[str, tuple[str, Callable[[str, Any], Any]]] = {
    "path": ("the script directory or file (ScriptAlias's target)", _text),
    "env": ("variables set for its scripts (SetEnv); added to cgi_env", _str_map),
    "pass_env": ("variables of gunicorn's environment passed on (PassEnv); added to cgi_pass_env", _str_list),
    "interpreters": ("extension to interpreter (Action); added to cgi_interpreters", _interpreters),
    "timeout": ("idle timeout, seconds (cgi_timeout)", _seconds(True)),
    "max_runtime": ("total run time, seconds, 0 for none (cgi_max_runtime)", _seconds(False)),
    "limit_request_body": ("largest request body, bytes, 0 for no limit (cgi_limit_request_body)", _count),
    "user": ("the user its scripts run as (suEXEC)", _account),
    "group": ("the group its scripts run as (suEXEC); default: the user's group", _account),
    "x_sendfile": ("directories an X-Sendfile answer may name", _directories),
}


def normalize(script_alias: dict[str, Any]) -> dict[str, str | Entry]:
    """Entries checked: a path stays a path, a dict keeps only known, valid keys.

    Raises ValueError naming the entry and the key.
    """
    out: dict[str, str | Entry] = {}
    for prefix, entry in script_alias.items():
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            raise ValueError("URL prefix %r must start with '/'" % (prefix,))
        if isinstance(entry, str):
            out[prefix] = _text("path", entry)
            continue
        if not isinstance(entry, dict):
            raise ValueError("script_alias[%r]: expected a path or a dict, got %r" % (prefix, entry))
        unknown = sorted(set(entry) - set(KEYS), key=str)
        if unknown:
            raise ValueError("script_alias[%r]: unknown key(s) %s; known: %s"
                             % (prefix, ", ".join(map(repr, unknown)), ", ".join(KEYS)))
        if "path" not in entry:
            raise ValueError("script_alias[%r]: 'path' is required" % (prefix,))
        if "group" in entry and "user" not in entry:
            raise ValueError("script_alias[%r]: 'group' needs 'user'" % (prefix,))
        try:
            out[prefix] = {key: KEYS[key][1](key, value) for key, value in entry.items()}
        except ValueError as exc:
            raise ValueError("script_alias[%r]: %s" % (prefix, exc)) from None
    return out
