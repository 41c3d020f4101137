"""The stock gunicorn command knows the CGI settings: --print-config and --check-config."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)


def gunicorn(tmp_path, conf: str, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "gunicorn.conf.py"
    path.write_text("from gunicorn_cgid.hooks import *\n" + conf)
    return subprocess.run([sys.executable, "-m", "gunicorn", *args, "-c", str(path), "gunicorn_cgid:app"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=50)


def test_print_config_lists_the_cgi_settings_with_their_values(tmp_path):
    out = gunicorn(tmp_path, "cgi_timeout = 7\nscript_alias = {'/x/': {'path': 'bin/', 'timeout': 3}}\n",
                   "--print-config")
    assert out.returncode == 0, out.stderr
    lines = {ln.split("=", 1)[0].strip(): ln.split("=", 1)[1].strip() for ln in out.stdout.splitlines() if "=" in ln}
    assert lines["cgi_timeout"] == "7.0"
    assert lines["script_sock"] == "logs/cgisock" and lines["script_log_buffer"] == "1024"
    assert "'timeout': 3.0" in lines["script_alias"]


@pytest.mark.parametrize("conf, key", [
    ("cgi_timeout = 'soon'\n", "cgi_timeout"),
    ("cgi_timeout = 0\n", "cgi_timeout"),
    ("script_alias = {'/x/': {'path': 'bin/', 'evn': {}}}\n", "script_alias"),
    ("cgi_max_scripts = -1\n", "cgi_max_scripts"),
])
def test_check_config_refuses_a_bad_value_naming_the_key(tmp_path, conf, key):
    out = gunicorn(tmp_path, conf, "--check-config")
    assert out.returncode != 0
    assert "Invalid value for %s" % key in out.stderr


def test_check_config_accepts_a_good_file(tmp_path):
    out = gunicorn(tmp_path, "cgi_timeout = 5\n", "--check-config")
    assert out.returncode == 0, out.stderr
