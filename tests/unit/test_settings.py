"""Settings: validation of every kind of value, and injection under the stock gunicorn command."""

from __future__ import annotations

import pytest
from gunicorn.config import Config

from gunicorn_cgid import settings


@pytest.mark.parametrize("name, value, expected", [
    ("script_alias", {"/cgi-bin/": "cgi-bin/"}, {"/cgi-bin/": "cgi-bin/"}),
    ("script_alias", "/a/=x/,/b=y.cgi", {"/a/": "x/", "/b": "y.cgi"}),
    ("cgi_timeout", "2.5", 2.5),
    ("cgi_timeout", 0, 0.0),
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


def test_every_setting_is_documented_and_validated():
    for cls in settings.CGI_SETTINGS:
        assert cls.desc and cls.short, cls.name
        assert cls.cli and cls.cli[0] == "--" + cls.name.replace("_", "-"), cls.name
