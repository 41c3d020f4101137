"""The settings reference page, generated from the ``Setting`` classes.

One source of truth, as gunicorn does for its own settings page: each entry of
``gunicorn_cgid.settings.CGI_SETTINGS`` gives its name, flag, default and
description, and ``gunicorn_cgid.locations.KEYS`` gives the keys a
per-location ``script_alias`` entry may carry. ``settings_markdown()`` is pure
(no MkDocs needed); ``docs/site_hooks.py`` serves its result as ``settings.md``.
"""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

try:
    from gunicorn_cgid import locations, settings
except ImportError:  # building from a checkout that is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from gunicorn_cgid import locations, settings

#: Shown in the per-location section; tests check it passes ``locations.normalize``.
LOCATION_EXAMPLE = """\
script_alias = {
    "/cgi-bin/": "cgi-bin/",
    "/git/": {
        "path": "/usr/lib/git-core/git-http-backend",
        "env": {"GIT_PROJECT_ROOT": "/srv/git", "GIT_HTTP_EXPORT_ALL": "1"},
        "timeout": 300,
        "user": "git",
    },
}
"""


def format_default(value: Any) -> str:
    """A default as it would be written in ``gunicorn.conf.py``."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`%s`" % value
    if isinstance(value, (str, list, tuple, dict)):
        return "`%s`" % json.dumps(value)
    return "`%s`" % (value,)


def _rst_to_markdown(text: str, names: set[str]) -> str:
    """``literal`` becomes `literal`; a literal naming a setting links to it."""
    def literal(match: re.Match[str]) -> str:
        inner = match.group(1)
        if inner in names:
            return "[`%s`](#%s)" % (inner, inner)
        return "`%s`" % inner
    return re.sub(r"``(.+?)``", literal, text)


def _link_names(text: str, names: set[str]) -> str:
    """Plain-text setting names (as in ``locations.KEYS``) become links."""
    return re.sub(r"\b(%s)\b" % "|".join(sorted(names, key=len, reverse=True)),
                  lambda m: "[`%s`](#%s)" % (m.group(1), m.group(1)), text)


def _desc(cls: type) -> tuple[str, str]:
    """(summary line, the rest) of a setting's ``desc``."""
    text = textwrap.dedent(cls.desc).strip()
    summary, _, rest = text.partition("\n\n")
    return " ".join(summary.split()), rest.strip()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def settings_markdown() -> str:
    """The whole settings reference page, as Markdown."""
    classes = list(settings.CGI_SETTINGS)
    names = {cls.name for cls in classes}
    out = [
        "# Settings",
        "",
        "Every setting below goes in `gunicorn.conf.py` as `name = value`, beside gunicorn's own settings,"
        " and works with the stock `gunicorn` command once the file has"
        " `from gunicorn_cgid.hooks import *`. The `gunicorn-cgid` command (same arguments as `gunicorn`)"
        " also takes each one as the command-line flag shown, and in `GUNICORN_CMD_ARGS`."
        " `gunicorn --print-config` lists them with their values and `gunicorn --check-config` validates them.",
        "",
        "Relative paths are relative to gunicorn's `chdir`. Scripts run as gunicorn's `user` and `group`"
        " unless a [location](#per-location-settings) says otherwise.",
        "",
        "This page is generated from the `Setting` classes in `gunicorn_cgid/settings.py`"
        " and from `gunicorn_cgid/locations.py`.",
        "",
        "| setting | flag | default | meaning |",
        "|---|---|---|---|",
    ]
    for cls in classes:
        summary, _ = _desc(cls)
        out.append("| [`%s`](#%s) | `%s` | %s | %s |" % (
            cls.name, cls.name, " ".join(cls.cli), _cell(format_default(cls.default)),
            _cell(_rst_to_markdown(summary, names))))
    out.append("")
    for cls in classes:
        summary, rest = _desc(cls)
        out += [
            "## `%s` {#%s}" % (cls.name, cls.name),
            "",
            "**Command line:** `%s %s`  " % (" ".join(cls.cli), cls.meta),
            "**Default:** %s" % format_default(cls.default),
            "",
            _rst_to_markdown(summary, names - {cls.name}),
            "",
        ]
        if rest:
            out += [_rst_to_markdown(rest, names - {cls.name}), ""]
    out += [
        "## Per-location settings {#per-location-settings}",
        "",
        "An entry of [`script_alias`](#script_alias) is either a path or a dict, as Apache's `<Location>`"
        " holds `SetEnv`, `PassEnv`, `Action` or suEXEC's user for one URL prefix."
        " Keys an entry leaves out take the global setting; `path` is required, and an unknown key"
        " stops the start with a message naming it. Per-location entries come from the config file only"
        " (the `--script-alias` flag takes `PREFIX=PATH` pairs).",
        "",
        "```python",
        LOCATION_EXAMPLE.rstrip("\n"),
        "```",
        "",
        "| key | sets |",
        "|---|---|",
    ]
    for key, (meaning, _validator) in locations.KEYS.items():
        out.append("| `%s` | %s |" % (key, _cell(_link_names(meaning, names))))
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    sys.stdout.write(settings_markdown())
