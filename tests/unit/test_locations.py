"""Per-location script_alias entries: what is accepted, what stops the start."""

from __future__ import annotations

import pytest

from gunicorn_cgid import locations, settings
from gunicorn_cgid.worker.options import Location, location

DEFAULT = Location(set_env={"A": "1", "B": "1"}, passed_env={}, interpreters={".php": "/usr/bin/php-cgi"},
                   timeout=60.0, max_runtime=0.0, limit_request_body=100, user=None, group=None, x_sendfile=())


def test_plain_paths_stay_paths_and_dicts_keep_their_keys():
    out = locations.normalize({"/cgi-bin/": "cgi-bin/", "/git/": {"path": "/usr/lib/git", "env": {"X": "y"},
                                                                 "timeout": 5, "interpreters": {".PL": "/p"}}})
    assert out == {"/cgi-bin/": "cgi-bin/",
                   "/git/": {"path": "/usr/lib/git", "env": {"X": "y"}, "timeout": 5.0, "interpreters": {".pl": "/p"}}}


@pytest.mark.parametrize("entry, words", [
    ({"path": "x", "evn": {}}, ["unknown key", "'evn'"]),
    ({"path": "x", "zz": 1, "aa": 2}, ["'aa', 'zz'"]),
    ({"env": {}}, ["'path' is required"]),
    ({"path": "x", "timeout": 0}, ["timeout", "> 0"]),
    ({"path": "x", "timeout": "soon"}, ["timeout"]),
    ({"path": "x", "max_runtime": -1}, ["max_runtime"]),
    ({"path": "x", "limit_request_body": 1.5}, ["limit_request_body"]),
    ({"path": "x", "env": {"A": 1}}, ["env"]),
    ({"path": "x", "interpreters": {"php": "/x"}}, ["must start with '.'"]),
    ({"path": "x", "group": "g"}, ["'group' needs 'user'"]),
    ({"path": "x", "x_sendfile": ["relative/"]}, ["absolute"]),
    ("", ["non-empty"]),
    (3, ["a path or a dict"]),
])
def test_bad_entries_are_refused_naming_the_entry_and_key(entry, words):
    with pytest.raises(ValueError) as info:
        locations.normalize({"/loc/": entry})
    for word in words:
        assert word in str(info.value)
    assert "/loc/" in str(info.value) or not isinstance(entry, dict)


def test_the_setting_validates_entries():
    with pytest.raises(ValueError, match="unknown key"):
        settings.ScriptAlias().set({"/a/": {"path": "x", "nope": 1}})
    with pytest.raises(ValueError, match="start with '/'"):
        settings.ScriptAlias().set({"a/": "x"})


def test_a_location_adds_to_and_overrides_the_global_settings():
    loc = location(DEFAULT, {"path": "x", "env": {"B": "2", "C": "3"}, "interpreters": {".py": "/py"},
                             "timeout": 5.0, "limit_request_body": 0, "user": "www-cgi"})
    assert loc.set_env == {"A": "1", "B": "2", "C": "3"}
    assert loc.interpreters == {".php": "/usr/bin/php-cgi", ".py": "/py"}
    assert (loc.timeout, loc.max_runtime, loc.limit_request_body, loc.user) == (5.0, 0.0, 0, "www-cgi")
    assert location(DEFAULT, {"path": "x"}) == DEFAULT
