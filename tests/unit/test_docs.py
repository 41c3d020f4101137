"""The documentation site's generators: no setting or location key goes undocumented.

The generator functions are tested directly; MkDocs is not needed here
(``.ci/run`` builds the site itself with ``mkdocs build --strict``).
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gunicorn_cgid import locations, settings

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _load(name: str) -> ModuleType:
    """Import a module of docs/ as MkDocs loads a hook: with docs/ on sys.path meanwhile."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DOCS / ("%s.py" % name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(DOCS))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(DOCS))
    return module


gen_settings = _load("gen_settings")
site_hooks = _load("site_hooks")


@pytest.fixture(scope="module")
def page() -> str:
    return gen_settings.settings_markdown()


def _plain(markdown: str) -> str:
    """Links to anchors dropped (``[`x`](#x)`` -> ``x``), RST literals as Markdown, whitespace folded."""
    text = re.sub(r"\[`([^`]+)`\]\(#[\w-]+\)", r"\1", markdown).replace("``", "`")
    return " ".join(text.replace("`", "").split())


@pytest.mark.parametrize("cls", settings.CGI_SETTINGS, ids=lambda cls: cls.name)
def test_every_setting_is_documented(cls: type, page: str) -> None:
    assert cls.cli and cls.meta and cls.desc.strip(), "%s needs cli, meta and desc" % cls.name
    assert "## `%s` {#%s}" % (cls.name, cls.name) in page
    assert "[`%s`](#%s)" % (cls.name, cls.name) in page  # in the summary table
    assert "`%s %s`" % (" ".join(cls.cli), cls.meta) in page
    section = page.split("## `%s` {#%s}" % (cls.name, cls.name), 1)[1].split("\n## ", 1)[0]
    assert "**Default:** %s" % gen_settings.format_default(cls.default) in section
    summary = cls.desc.strip().split("\n\n")[0]
    assert _plain(summary) in _plain(section)


def test_settings_are_the_registered_ones(page: str) -> None:
    """The page is built from CGI_SETTINGS, which holds every CGI Setting class of the module."""
    headings = re.findall(r"^## `(\w+)` \{#", page, re.M)
    assert headings == [cls.name for cls in settings.CGI_SETTINGS]
    assert len(headings) == len({cls.name for cls in vars(settings).values()
                                 if isinstance(cls, type) and issubclass(cls, settings.CGISetting)
                                 and cls is not settings.CGISetting})


@pytest.mark.parametrize("key", list(locations.KEYS))
def test_every_location_key_is_documented(key: str, page: str) -> None:
    section = page.split("{#per-location-settings}", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| `%s` |" % key)]
    assert len(rows) == 1
    assert _plain(locations.KEYS[key][0]) in _plain(rows[0])


def test_location_example_is_valid() -> None:
    namespace: dict[str, object] = {}
    exec(gen_settings.LOCATION_EXAMPLE, namespace)
    normalized = locations.normalize(namespace["script_alias"])  # type: ignore[arg-type]
    assert set(normalized["/git/"]) <= set(locations.KEYS)  # type: ignore[arg-type]


def test_no_rst_markup_left(page: str) -> None:
    assert "``" not in page.replace("```", "")


def test_setting_links_resolve(page: str) -> None:
    anchors = set(re.findall(r"\{#([\w-]+)\}", page))
    for target in re.findall(r"\]\(#([\w-]+)\)", page):
        assert target in anchors


@pytest.mark.parametrize("value, shown", [
    (None, "unset"), (True, "`True`"), (0, "`0`"), ("logs/cgisock", '`"logs/cgisock"`'),
    ({"/cgi-bin/": "cgi-bin/"}, '`{"/cgi-bin/": "cgi-bin/"}`'), ([".cgi"], '`[".cgi"]`'),
])
def test_format_default(value: object, shown: str) -> None:
    assert gen_settings.format_default(value) == shown


# --- the site hook's pure parts ---------------------------------------------------------------------------


def test_nav_lists_only_pages_present() -> None:
    titles = {"extra.md": "An extra page"}
    nav = site_hooks.build_nav({"index.md", "settings.md", "apache.md"}, titles)
    assert nav == [{"Home": "index.md"}, {"Settings": "settings.md"}, {"Apache migration": "apache.md"}]
    full = {"index.md", "settings.md", "apache.md", "containment.md", "security.md", "extra.md",
            "recipes/index.md", "recipes/cgit.md", "benchmark/index.md", "benchmark/results.md"}
    nav = site_hooks.build_nav(full, titles)
    flat = repr(nav)
    for src in full:
        assert repr(src) in flat
    assert nav[2:6] == [{"Apache migration": "apache.md"}, {"Containment": "containment.md"},
                        {"Security model": "security.md"}, {"An extra page": "extra.md"}]


def test_guide_list_names_only_pages_present() -> None:
    text = site_hooks.guide_list({"index.md", "settings.md", "apache.md"}, {})
    assert "(apache.md)" in text and "security.md" not in text and "benchmark" not in text


TABLE = {"README.md": "index.md", "bench/README.md": "benchmark/index.md",
         "examples/cgit": "recipes/cgit.md", "examples/cgit/README.md": "recipes/cgit.md",
         "examples/cgit/gunicorn.conf.py": "recipes/cgit.md#file-gunicorn-conf-py"}


@pytest.mark.parametrize("link, expected", [
    ("[Apache](apache.md#directives)", "[Apache](apache.md#directives)"),
    ("[README](../README.md)", "[README](index.md)"),
    ("[bench](../bench/README.md)", "[bench](benchmark/index.md)"),
    ("[cgit](../examples/cgit/)", "[cgit](recipes/cgit.md)"),
    ("[conf](../examples/cgit/gunicorn.conf.py)", "[conf](recipes/cgit.md#file-gunicorn-conf-py)"),
    ("[the daemon](../gunicorn_cgid/daemon/server.py)", "the daemon (`gunicorn_cgid/daemon/server.py`)"),
    ("[`spawn.py`](../gunicorn_cgid/daemon/spawn.py#L3)", "`gunicorn_cgid/daemon/spawn.py`"),
    ("[later](security.md)", "later (`docs/security.md`)"),
    ("![pic](img/a.png)", "`docs/img/a.png`"),
    ("[web](https://example.org/x.md)", "[web](https://example.org/x.md)"),
    ("[here](#anchor)", "[here](#anchor)"),
    ("`[code](x.md)`", "`[code](x.md)`"),
])
def test_rewrite_links(link: str, expected: str) -> None:
    pages = {"index.md", "apache.md", "recipes/cgit.md", "benchmark/index.md"}
    assert site_hooks.rewrite_links("a %s b" % link, "docs/guide.md", "guide.md", pages, TABLE) \
        == "a %s b" % expected


def test_rewrite_links_relative_to_where_the_text_lives() -> None:
    pages = {"index.md", "recipes/cgit.md", "recipes/git.md"}
    table = dict(TABLE, **{"examples/git": "recipes/git.md"})
    out = site_hooks.rewrite_links("[git](../git/) and [conf](gunicorn.conf.py) and [rc](cgitrc)",
                                   "examples/cgit/README.md", "recipes/cgit.md", pages, table)
    assert out == "[git](git.md) and [conf](cgit.md#file-gunicorn-conf-py) and rc (`examples/cgit/cgitrc`)"


def test_rewrite_links_leaves_code_blocks() -> None:
    text = "```\n[x](nope.md)\n```\n~~~~\n[y](nope.md)\n```\n~~~~\n[z](nope.md)\n"
    out = site_hooks.rewrite_links(text, "docs/a.md", "a.md", set(), {})
    assert out == text.replace("[z](nope.md)", "z (`docs/nope.md`)")


def test_recipe_page_fences_hold_backticks() -> None:
    text = site_hooks.recipe_markdown("x", None, [("Dockerfile", "RUN echo ```` done\n")])
    assert text.startswith("# x\n")
    assert "`````dockerfile\nRUN echo ```` done\n`````" in text


def test_recipes_in_the_tree_are_published() -> None:
    root = DOCS.parent
    table = site_hooks.published(root)
    for name in site_hooks.recipes(root):
        assert table["examples/%s" % name] == "recipes/%s.md" % name
