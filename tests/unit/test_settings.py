"""Settings: validation of every kind of value, and injection under the stock gunicorn command."""

from __future__ import annotations

import re

import pytest
from gunicorn.config import Config

from gunicorn_cgid import settings


@pytest.mark.parametrize("name, value, expected", [
    ("script_alias", {"/cgi-bin/": "cgi-bin/"}, {"/cgi-bin/": "cgi-bin/"}),
    ("script_alias", "/a/=x/,/b=y.cgi", {"/a/": "x/", "/b": "y.cgi"}),
    ("cgi_timeout", "2.5", 2.5),
    ("cgi_timeout", "0.001", 0.001),
    ("script_log_buffer", "0x100", 256),
    ("cgi_accept_path_info", "off", False),
    ("cgi_env", ["A=1", "B=x=y"], {"A": "1", "B": "x=y"}),
    ("cgi_pass_env", "TZ,LANG", ["TZ", "LANG"]),
    ("cgi_extensions", [".cgi", ".pl"], [".cgi", ".pl"]),
    ("cgi_interpreters", {".php": "/usr/bin/php-cgi"}, {".php": "/usr/bin/php-cgi"}),
    ("cgi_interpreters", {".PHP": "/usr/bin/php-cgi", ".Pl": "/usr/bin/perl"},
     {".php": "/usr/bin/php-cgi", ".pl": "/usr/bin/perl"}),
    ("cgi_interpreters", ".PY=/usr/bin/python3", {".py": "/usr/bin/python3"}),
    ("cgi_interpreters", {".php": "/usr/bin/php-cgi", ".PHP": "/usr/bin/php-cgi"}, {".php": "/usr/bin/php-cgi"}),
    ("cgi_rlimit_cpu", None, None),
    ("script_log", "", None),
])
def test_valid_values(name, value, expected):
    cls = next(c for c in settings.CGI_SETTINGS if c.name == name)
    setting = cls()
    setting.set(value)
    assert setting.value == expected


@pytest.mark.parametrize("name, value", [
    ("script_alias", 5),
    ("script_alias", {"cgi-bin/": "x"}),
    ("cgi_timeout", "soon"),
    ("cgi_timeout", -1),
    ("cgi_timeout", True),
    ("cgi_timeout", "nan"),
    ("cgi_timeout", "inf"),
    ("cgi_timeout", 10 ** 400),
    ("cgi_max_runtime", 0.0004),
    ("cgi_max_runtime", -1),
    ("cgi_kill_grace", -0.5),
    ("cgi_queue_timeout", "later"),
    ("cgi_max_scripts", -1),
    ("cgi_max_scripts", float("inf")),
    ("script_log_length", "big"),
    ("cgi_rlimit_cpu", -1),
    ("cgi_rlimit_mem", "lots"),
    ("script_log_buffer", -3),
    ("script_log_buffer", 1.5),
    ("cgi_accept_path_info", "maybe"),
    ("cgi_env", {"A=B": "x"}),
    ("cgi_env", ["novalue"]),
    ("cgi_extensions", ["cgi"]),
    ("cgi_interpreters", {".php": "php-cgi"}),
    ("cgi_interpreters", {".php": "/usr/bin/php-cgi", ".PHP": "/usr/bin/php8-cgi"}),
    ("script_sock", ""),
])
def test_invalid_values(name, value):
    cls = next(c for c in settings.CGI_SETTINGS if c.name == name)
    with pytest.raises((TypeError, ValueError)):
        cls().set(value)


def test_defaults_match_apache():
    cfg = Config()
    assert cfg.script_sock == "logs/cgisock"
    assert cfg.script_log is None
    assert cfg.script_log_buffer == 1024
    assert cfg.script_log_length == 10385760
    assert cfg.cgi_timeout == 60
    assert cfg.cgi_kill_grace == 3


def test_inject_fills_missing_keys_from_the_config_namespace():
    cfg = Config()
    for cls in settings.CGI_SETTINGS:
        del cfg.settings[cls.name]
    settings.inject(cfg, {"cgi_timeout": 5, "script_alias": {"/x/": "y/"}})
    assert cfg.cgi_timeout == 5.0
    assert cfg.script_alias == {"/x/": "y/"}
    assert cfg.script_log_length == 10385760


def test_inject_names_the_bad_key():
    cfg = Config()
    for cls in settings.CGI_SETTINGS:
        del cfg.settings[cls.name]
    with pytest.raises(ValueError, match="cgi_max_scripts"):
        settings.inject(cfg, {"cgi_max_scripts": "many"})


# -- what 0 means ---------------------------------------------------------------

@pytest.mark.parametrize("name, meaning", [
    ("cgi_max_runtime", 0.0),     # no limit
    ("cgi_kill_grace", 0.0),      # SIGKILL right after SIGTERM
    ("cgi_queue_timeout", 0.0),   # no waiting for a slot: 503 at once
    ("cgi_max_scripts", 0),       # no limit
    ("script_log_buffer", 0),     # no request body in ScriptLog
    ("script_log_length", 0),     # a record only while the log is empty
])
def test_zero_is_accepted_where_it_means_something(name, meaning):
    for zero in (0, "0", 0.0):
        if isinstance(meaning, int) and isinstance(zero, float):
            continue
        setting = _setting(name)
        setting.set(zero)
        assert setting.value == meaning and type(setting.value) is type(meaning), (name, zero)


@pytest.mark.parametrize("name", ["cgi_timeout", "cgi_rlimit_cpu", "cgi_rlimit_mem", "cgi_rlimit_nproc"])
def test_zero_is_refused_where_it_would_break_every_script(name):
    for zero in (0, "0"):
        with pytest.raises(ValueError, match=r"> 0, got %r" % (zero,)):
            _setting(name).set(zero)


def test_zero_cgi_timeout_is_refused_naming_key_and_value():
    cfg = Config()
    for cls in settings.CGI_SETTINGS:
        del cfg.settings[cls.name]
    with pytest.raises(ValueError, match=r"^Invalid value for cgi_timeout: .*got 0$"):
        settings.inject(cfg, {"cgi_timeout": 0})


@pytest.mark.parametrize("name", ["cgi_rlimit_cpu", "cgi_rlimit_mem", "cgi_rlimit_nproc"])
def test_resource_limits_are_unset_by_default_and_by_an_empty_value(name):
    assert _setting(name).value is None
    setting = _setting(name)
    setting.set("")
    assert setting.value is None
    setting.set("1")
    assert setting.value == 1


def test_the_smallest_run_time_limit_survives_the_trip_to_milliseconds():
    setting = _setting("cgi_max_runtime")
    setting.set("0.001")
    assert int(setting.value * 1000) == 1  # not 0, which the daemon reads as "no limit"


# -- every setting -----------------------------------------------------------------

NUMERIC_META = {"SECONDS", "BYTES", "INT"}
#: A value of the wrong kind for each sort of setting, by its ``meta``.
BAD_BY_META = {
    "SECONDS": ["soon", -1],
    "BYTES": ["lots", -1],
    "INT": ["many", -1],
    "BOOL": ["maybe", 2],
    "PATH": [5, "a\0b"],
    "PREFIX=PATH[,PREFIX=PATH]": [5, {"no-slash/": "x"}, {"/x/": {"path": "p", "nope": 1}}],
    "PREFIX=DIR[,PREFIX=DIR]": [5, {"/no-trailing-slash": "x"}],
    "EXT=PATH[,EXT=PATH]": [5, {"php": "/usr/bin/php-cgi"}],
    "NAME=VALUE[,NAME=VALUE]": [5, {"A=B": "x"}],
    "EXT[,EXT]": [5, ["cgi"]],
    "NAME[,NAME]": [5, [""]],
}


def _setting(name: str):
    return next(c for c in settings.CGI_SETTINGS if c.name == name)()


def test_every_setting_is_documented_and_validated():
    for cls in settings.CGI_SETTINGS:
        assert cls.desc and cls.short, cls.name
        assert cls.cli and cls.cli[0] == "--" + cls.name.replace("_", "-"), cls.name
        # Its own validator, from this package, not one inherited or borrowed.
        assert "validator" in cls.__dict__, cls.name
        assert cls.validator.__module__ == settings.__name__, cls.name
        assert cls.meta in BAD_BY_META, "%s: add bad values for meta %r to this test" % (cls.name, cls.meta)
        for bad in BAD_BY_META[cls.meta]:
            with pytest.raises((TypeError, ValueError)):
                cls().set(bad)
                pytest.fail("%s accepted %r" % (cls.name, bad))
        if cls.meta in NUMERIC_META:
            assert re.search(r"(?<![\w.])0(?![\w.])", cls.desc), "%s: desc does not say what 0 means" % cls.name
