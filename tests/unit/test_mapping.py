"""URL to script mapping: table-driven against a fake tree, plus a few checks on a real one."""

from __future__ import annotations

import os
import posixpath
import stat as stat_mod
from pathlib import Path

import pytest

from gunicorn_cgid.errors import BadRequest, CGIError, Forbidden, NotFound, Unmapped
from gunicorn_cgid.mapping import Alias, ScriptTarget, make_aliases, map_request, normalize_path


class FakeFS:
    """A tree of "dir", "file", "noperm" (a directory without search permission)
    and "->target" (a symbolic link) entries, with stat/realpath as os has them."""

    def __init__(self, entries: dict[str, str]) -> None:
        self.entries = {"/": "dir", **entries}
        for path in list(self.entries):
            parent = posixpath.dirname(path)
            while parent != "/" and parent not in self.entries:
                self.entries[parent] = "dir"
                parent = posixpath.dirname(parent)
        self.calls: list[str] = []

    def _resolve(self, path: str, strict: bool) -> str:
        parts = [p for p in path.split("/") if p]
        current = "/"
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                current = posixpath.dirname(current)
                continue
            if strict and self.entries.get(current) == "noperm":
                raise PermissionError(13, "Permission denied", path)
            candidate = posixpath.join(current, part)
            kind = self.entries.get(candidate)
            if kind is None:
                if strict:
                    raise FileNotFoundError(2, "No such file or directory", path)
                return posixpath.join(candidate, *parts)
            if kind.startswith("->"):
                hops += 1
                if hops > 40:
                    raise OSError(40, "Too many levels of symbolic links", path)
                target = kind[2:]
                base = "/" if target.startswith("/") else current
                parts = [p for p in target.split("/") if p] + parts
                current = "/" if base == "/" else base
                continue
            if parts and kind == "file":
                if strict:
                    raise NotADirectoryError(20, "Not a directory", path)
                return posixpath.join(candidate, *parts)
            current = candidate
        return current

    def stat(self, path: str) -> os.stat_result:
        self.calls.append(path)
        real = self._resolve(path, strict=True)
        kind = self.entries[real]
        mode = stat_mod.S_IFREG | 0o755 if kind == "file" else stat_mod.S_IFDIR | 0o755
        return os.stat_result((mode, 1, 1, 1, 0, 0, 0, 0, 0, 0))

    def realpath(self, path: str) -> str:
        return self._resolve(path, strict=False)


TREE = FakeFS({
    "/srv/cgi-bin/env.sh": "file",
    "/srv/cgi-bin/sub/deep.sh": "file",
    "/srv/cgi-bin/empty": "dir",
    "/srv/cgi-bin/link.sh": "->env.sh",
    "/srv/cgi-bin/linkdir": "->sub",
    "/srv/cgi-bin/escape.sh": "->/etc/evil.sh",
    "/srv/cgi-bin/escape-rel.sh": "->../outside/evil.sh",
    "/srv/cgi-bin/escapedir": "->/etc",
    "/srv/cgi-bin/locked": "noperm",
    "/srv/cgi-bin/locked/s.sh": "file",
    "/srv/outside/evil.sh": "file",
    "/etc/evil.sh": "file",
    "/srv/special/s.sh": "file",
    "/srv/tools/tool.cgi": "file",
    "/srv/tools/linked-tool": "->/opt/real/tool",
    "/opt/real/tool": "file",
    "/srv/linked-root": "->/srv/cgi-bin",
    "/srv/www/app.cgi": "file",
    "/srv/www/UPPER.CGI": "file",
    "/srv/www/readme.txt": "file",
    "/srv/www/noext": "file",
    "/srv/www/dir/x.cgi": "file",
    "/srv/www/cgi-binx/env.sh": "file",
})

ALIASES = make_aliases({
    "/cgi-bin/": "/srv/cgi-bin/",
    "/cgi-bin/special/": "/srv/special/",
    "/tool": "/srv/tools/tool.cgi",
    "/linked-tool": "/srv/tools/linked-tool",
    "/via-link/": "/srv/linked-root/",
}, "/")


def run(path: str, raw: str | None = None, docroot: str | None = None, extensions: tuple[str, ...] = (".cgi",),
        accept_path_info: bool = True, follow_symlinks: bool = False, aliases: list[Alias] | None = None,
        fs: FakeFS = TREE) -> ScriptTarget:
    return map_request(path, path if raw is None else raw, ALIASES if aliases is None else aliases, docroot,
                       list(extensions), accept_path_info, follow_symlinks, stat=fs.stat, realpath=fs.realpath)


def T(script_name: str, path_info: str, filename: str, prefix: str = "/cgi-bin/",
      root: str = "/srv/cgi-bin/") -> ScriptTarget:
    return ScriptTarget(script_name, path_info, filename, prefix, root)


OK: list[tuple[str, str, dict, ScriptTarget]] = [
    ("script", "/cgi-bin/env.sh", {}, T("/cgi-bin/env.sh", "", "/srv/cgi-bin/env.sh")),
    ("path info", "/cgi-bin/env.sh/a/b", {}, T("/cgi-bin/env.sh", "/a/b", "/srv/cgi-bin/env.sh")),
    ("path info of a slash", "/cgi-bin/env.sh/", {}, T("/cgi-bin/env.sh", "/", "/srv/cgi-bin/env.sh")),
    ("path info keeps its empty segments", "/cgi-bin/env.sh/a//b/", {},
     T("/cgi-bin/env.sh", "/a//b/", "/srv/cgi-bin/env.sh")),
    ("decoded path info", "/cgi-bin/env.sh/a b%", {}, T("/cgi-bin/env.sh", "/a b%", "/srv/cgi-bin/env.sh")),
    ("subdirectory", "/cgi-bin/sub/deep.sh/x", {}, T("/cgi-bin/sub/deep.sh", "/x", "/srv/cgi-bin/sub/deep.sh")),
    ("doubled slash tolerated", "/cgi-bin//env.sh", {}, T("/cgi-bin/env.sh", "", "/srv/cgi-bin/env.sh")),
    ("dot segment", "/cgi-bin/./env.sh", {}, T("/cgi-bin/env.sh", "", "/srv/cgi-bin/env.sh")),
    ("dot-dot inside the tree", "/cgi-bin/sub/../env.sh", {}, T("/cgi-bin/env.sh", "", "/srv/cgi-bin/env.sh")),
    ("dot-dot before the prefix", "/x/../cgi-bin/env.sh", {}, T("/cgi-bin/env.sh", "", "/srv/cgi-bin/env.sh")),
    ("dot-dot in path info", "/cgi-bin/env.sh/a/../b", {}, T("/cgi-bin/env.sh", "/b", "/srv/cgi-bin/env.sh")),
    ("longest prefix wins", "/cgi-bin/special/s.sh/p", {},
     T("/cgi-bin/special/s.sh", "/p", "/srv/special/s.sh", "/cgi-bin/special/", "/srv/special/")),
    ("file alias", "/tool", {}, T("/tool", "", "/srv/tools/tool.cgi", "/tool", "/srv/tools/tool.cgi")),
    ("file alias, rest is path info", "/tool/extra/x", {},
     T("/tool", "/extra/x", "/srv/tools/tool.cgi", "/tool", "/srv/tools/tool.cgi")),
    ("file alias, trailing slash", "/tool/", {},
     T("/tool", "/", "/srv/tools/tool.cgi", "/tool", "/srv/tools/tool.cgi")),
    ("file alias may itself be a link", "/linked-tool/p", {},
     T("/linked-tool", "/p", "/srv/tools/linked-tool", "/linked-tool", "/srv/tools/linked-tool")),
    ("alias target reached through a link", "/via-link/env.sh", {},
     T("/via-link/env.sh", "", "/srv/linked-root/env.sh", "/via-link/", "/srv/linked-root/")),
    ("link inside the tree", "/cgi-bin/link.sh/p", {}, T("/cgi-bin/link.sh", "/p", "/srv/cgi-bin/link.sh")),
    ("linked directory inside the tree", "/cgi-bin/linkdir/deep.sh", {},
     T("/cgi-bin/linkdir/deep.sh", "", "/srv/cgi-bin/linkdir/deep.sh")),
    ("link out of the tree with follow_symlinks", "/cgi-bin/escape.sh", {"follow_symlinks": True},
     T("/cgi-bin/escape.sh", "", "/srv/cgi-bin/escape.sh")),
    ("relative link out of the tree with follow_symlinks", "/cgi-bin/escape-rel.sh", {"follow_symlinks": True},
     T("/cgi-bin/escape-rel.sh", "", "/srv/cgi-bin/escape-rel.sh")),
    ("accept_path_info off without path info", "/cgi-bin/env.sh", {"accept_path_info": False},
     T("/cgi-bin/env.sh", "", "/srv/cgi-bin/env.sh")),
    ("document root script", "/app.cgi", {"docroot": "/srv/www"},
     T("/app.cgi", "", "/srv/www/app.cgi", "", "/srv/www")),
    ("document root script with path info", "/dir/x.cgi/p/q", {"docroot": "/srv/www"},
     T("/dir/x.cgi", "/p/q", "/srv/www/dir/x.cgi", "", "/srv/www")),
    ("extensions are case-insensitive", "/UPPER.CGI", {"docroot": "/srv/www"},
     T("/UPPER.CGI", "", "/srv/www/UPPER.CGI", "", "/srv/www")),
    ("configured extension case does not matter", "/app.cgi", {"docroot": "/srv/www", "extensions": (".CGI",)},
     T("/app.cgi", "", "/srv/www/app.cgi", "", "/srv/www")),
    ("aliases before the document root", "/cgi-bin/env.sh", {"docroot": "/srv/www"},
     T("/cgi-bin/env.sh", "", "/srv/cgi-bin/env.sh")),
    ("segment boundary: /cgi-binx is not /cgi-bin/", "/cgi-binx/env.sh",
     {"docroot": "/srv/www", "extensions": (".sh",)},
     T("/cgi-binx/env.sh", "", "/srv/www/cgi-binx/env.sh", "", "/srv/www")),
]


@pytest.mark.parametrize("path, kw, expected", [pytest.param(*c[1:], id=c[0]) for c in OK])
def test_map_request(path, kw, expected):
    assert run(path, **kw) == expected


ERRORS: list[tuple[str, str, dict, type[CGIError]]] = [
    ("missing", "/cgi-bin/missing.sh", {}, NotFound),
    ("missing with path info", "/cgi-bin/missing.sh/x", {}, NotFound),
    ("missing in a subdirectory", "/cgi-bin/sub/nope/x.sh", {}, NotFound),
    ("no alias, no document root", "/elsewhere/env.sh", {}, Unmapped),
    ("segment boundary without document root", "/cgi-binx/env.sh", {}, Unmapped),
    ("file alias segment boundary", "/toolx", {}, Unmapped),
    ("file alias segment boundary, document root", "/toolx", {"docroot": "/srv/www"}, NotFound),
    ("directory", "/cgi-bin/sub", {}, Forbidden),
    ("directory with slash", "/cgi-bin/sub/", {}, Forbidden),
    ("alias root", "/cgi-bin/", {}, Forbidden),
    ("empty directory", "/cgi-bin/empty/", {}, Forbidden),
    ("document root itself", "/", {"docroot": "/srv/www"}, Forbidden),
    ("dot-dot above the root", "/cgi-bin/../../etc/passwd", {}, BadRequest),
    ("dot-dot at the root", "/..", {}, BadRequest),
    ("dot-dot after the prefix climbs out", "/cgi-bin/sub/../../../x", {}, BadRequest),
    ("relative path", "cgi-bin/env.sh", {}, BadRequest),
    ("nul byte", "/cgi-bin/env.sh\0/x", {}, NotFound),
    ("accept_path_info off with path info", "/cgi-bin/env.sh/x", {"accept_path_info": False}, NotFound),
    ("accept_path_info off with a trailing slash", "/cgi-bin/env.sh/", {"accept_path_info": False}, NotFound),
    ("accept_path_info off, file alias", "/tool/x", {"accept_path_info": False}, NotFound),
    ("link out of the tree", "/cgi-bin/escape.sh", {}, Forbidden),
    ("relative link out of the tree", "/cgi-bin/escape-rel.sh", {}, Forbidden),
    ("linked directory out of the tree", "/cgi-bin/escapedir/evil.sh", {}, Forbidden),
    ("no search permission", "/cgi-bin/locked/s.sh", {}, Forbidden),
    ("extension not allowed", "/readme.txt", {"docroot": "/srv/www"}, Forbidden),
    ("no extension", "/noext", {"docroot": "/srv/www"}, Forbidden),
    ("extension not allowed, with path info", "/readme.txt/x", {"docroot": "/srv/www"}, Forbidden),
    ("document root missing file", "/nothing.cgi", {"docroot": "/srv/www"}, NotFound),
]


@pytest.mark.parametrize("path, kw, error", [pytest.param(*c[1:], id=c[0]) for c in ERRORS])
def test_map_request_errors(path, kw, error):
    with pytest.raises(error) as info:
        run(path, **kw)
    assert info.type is error
    assert info.value.status == {NotFound: 404, Unmapped: 404, Forbidden: 403, BadRequest: 400}[error]


@pytest.mark.parametrize("path, kw, fragment", [
    ("/cgi-bin/escape.sh", {}, "symbolic link"),
    ("/cgi-bin/escapedir/evil.sh", {}, "symbolic link"),
    ("/cgi-bin/locked/s.sh", {}, "search permission"),
    ("/cgi-bin/sub/", {}, "directory"),
    ("/readme.txt", {"docroot": "/srv/www"}, "cgi_extensions"),
    ("/cgi-bin/env.sh/x", {"accept_path_info": False}, "AcceptPathInfo"),
    ("/cgi-bin/missing.sh", {}, "/srv/cgi-bin/missing.sh"),
])
def test_error_messages_say_why(path, kw, fragment):
    with pytest.raises(CGIError) as info:
        run(path, **kw)
    assert fragment in info.value.log_line


@pytest.mark.parametrize("path, raw", [
    ("/cgi-bin/env.sh/a/b", "/cgi-bin/env.sh/a%2Fb"),
    ("/cgi-bin/env.sh/a/b", "/cgi-bin/env.sh/a%2fb"),
    ("/cgi-bin/sub/deep.sh", "/cgi-bin/sub%2Fdeep.sh"),
    ("/cgi-bin/env.sh", "http://h.example/cgi-bin%2Fenv.sh"),
])
def test_encoded_slash_is_not_found(path, raw):
    fs = FakeFS(TREE.entries)
    with pytest.raises(NotFound):
        run(path, raw=raw, fs=fs)
    assert fs.calls == []  # refused before touching the filesystem


@pytest.mark.parametrize("raw", ["/cgi-bin/env.sh/a%252Fb", "/cgi-bin/env.sh/a%2"])
def test_other_escapes_are_fine(raw):
    assert run("/cgi-bin/env.sh/a", raw=raw).path_info == "/a"


def test_alias_order_does_not_matter():
    forward = make_aliases({"/cgi-bin/": "/srv/cgi-bin/", "/cgi-bin/special/": "/srv/special/"}, "/")
    backward = make_aliases({"/cgi-bin/special/": "/srv/special/", "/cgi-bin/": "/srv/cgi-bin/"}, "/")
    assert forward == backward
    assert run("/cgi-bin/special/s.sh", aliases=backward).filename == "/srv/special/s.sh"


@pytest.mark.parametrize("spec, base, expected", [
    ({"/cgi-bin/": "cgi-bin/"}, "/app", [Alias("/cgi-bin/", "/app/cgi-bin/")]),
    ({"/x": "./a/../b"}, "/app", [Alias("/x", "/app/b")]),
    ({"/x/": "/abs/dir/"}, "/app", [Alias("/x/", "/abs/dir/")]),
    ({"/a/": "/1/", "/a/b/c/": "/3/", "/a/b/": "/2/"}, "/",
     [Alias("/a/b/c/", "/3/"), Alias("/a/b/", "/2/"), Alias("/a/", "/1/")]),
])
def test_make_aliases(spec, base, expected):
    assert make_aliases(spec, base) == expected


@pytest.mark.parametrize("path, expected", [
    ("/", "/"),
    ("/a/b", "/a/b"),
    ("/a/./b", "/a/b"),
    ("/a/.", "/a/"),
    ("/a/b/..", "/a/"),
    ("/a/b/../c", "/a/c"),
    ("/a/../../", None),
    ("/..", None),
    ("/../a", None),
    ("/a//b", "/a//b"),
    ("/a/...", "/a/..."),
    ("/a/..b/", "/a/..b/"),
    ("/.hidden", "/.hidden"),
    ("a", None),
    ("", None),
])
def test_normalize_path(path, expected):
    if expected is None:
        with pytest.raises(BadRequest):
            normalize_path(path)
    else:
        assert normalize_path(path) == expected


def test_nph_flag():
    assert T("/cgi-bin/nph-x", "", "/srv/cgi-bin/nph-x").nph
    assert not T("/cgi-bin/x-nph", "", "/srv/cgi-bin/x-nph").nph
    assert not T("/cgi-bin/NPH-x", "", "/srv/cgi-bin/NPH-x").nph
    assert not T("/nph-dir/x", "", "/srv/nph-dir/x").nph


# -- a real tree ----------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "cgi").mkdir()
    (tmp_path / "outside").mkdir()
    for path in ("cgi/run.sh", "outside/evil.sh", "cgi/sub/x.cgi", "cgi/notes.txt"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("#!/bin/sh\n")
    (tmp_path / "cgi" / "inside.sh").symlink_to("run.sh")
    (tmp_path / "cgi" / "escape.sh").symlink_to(tmp_path / "outside" / "evil.sh")
    (tmp_path / "cgi" / "escdir").symlink_to(tmp_path / "outside")
    return tmp_path


def real(tree: Path, path: str, **kw: object) -> ScriptTarget:
    aliases = make_aliases({"/cgi-bin/": "cgi/"}, str(tree))
    return map_request(path, path, aliases, kw.pop("docroot", None), [".cgi"], **kw)  # type: ignore[arg-type]


def test_real_tree(tree):
    cgi = str(tree / "cgi")
    assert real(tree, "/cgi-bin/run.sh/p") == T("/cgi-bin/run.sh", "/p", cgi + "/run.sh", "/cgi-bin/", cgi + "/")
    assert real(tree, "/cgi-bin/inside.sh").filename == cgi + "/inside.sh"
    with pytest.raises(Forbidden):
        real(tree, "/cgi-bin/escape.sh")
    with pytest.raises(Forbidden):
        real(tree, "/cgi-bin/escdir/evil.sh")
    assert real(tree, "/cgi-bin/escape.sh", follow_symlinks=True).filename == cgi + "/escape.sh"
    with pytest.raises(Forbidden):
        real(tree, "/cgi-bin/sub")
    with pytest.raises(NotFound):
        real(tree, "/cgi-bin/none.sh")
    with pytest.raises(NotFound):
        real(tree, "/cgi-bin/run.sh/x", accept_path_info=False)


def test_real_document_root(tree):
    root = str(tree / "cgi")
    assert real(tree, "/sub/x.cgi/y", docroot=root) == T("/sub/x.cgi", "/y", root + "/sub/x.cgi", "", root)
    with pytest.raises(Forbidden):
        real(tree, "/notes.txt", docroot=root)
    with pytest.raises(Forbidden):
        real(tree, "/run.sh", docroot=root)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_real_tree_without_search_permission(tree):
    locked = tree / "cgi" / "sub"
    locked.chmod(0o600)
    try:
        with pytest.raises(Forbidden):
            real(tree, "/cgi-bin/sub/x.cgi")
    finally:
        locked.chmod(0o755)



def test_normalize_path_without_dot_segments_is_the_path_itself():
    # The fast path: adding a "." segment makes the walk run, and it must
    # give back the same path (with the "." as an empty last segment).
    for path in ("/", "//", "/a//b/", "/a.b/c", "/.hidden.", "/a/.b", "/a/b.", "/x..y/z", "/a/..b"):
        assert normalize_path(path) == path
        assert normalize_path(path + "/.") == path + "/", path
