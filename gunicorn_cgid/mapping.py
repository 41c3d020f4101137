"""URL to script: ``script_alias`` and handler-style mapping, in the worker.

Follows Apache's mod_alias (ScriptAlias, longest prefix on segment
boundaries), the core directory walk (the first existing file ends the script
path, the rest is PATH_INFO) and mod_cgi's checks (404, 403 for directories,
AcceptPathInfo). Filesystem access goes through the ``stat`` and ``realpath``
arguments, so tests can hand in a fake tree.
"""

from __future__ import annotations

import os
import stat as stat_mod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gunicorn_cgid.errors import BadRequest, Forbidden, NotFound, Unmapped


@dataclass(frozen=True, slots=True)
class Alias:
    prefix: str      # URL prefix, e.g. "/cgi-bin/"
    target: str      # absolute directory or file


@dataclass(frozen=True, slots=True)
class ScriptTarget:
    script_name: str             # decoded URL path of the script
    path_info: str               # decoded extra path, "" if none
    filename: str                # absolute path of the script
    context_prefix: str          # CONTEXT_PREFIX: the alias prefix, "" for the document root
    context_document_root: str   # CONTEXT_DOCUMENT_ROOT: what the prefix maps to

    @property
    def nph(self) -> bool:
        return os.path.basename(self.filename).startswith("nph-")


def make_aliases(script_alias: Mapping[str, str | Mapping[str, Any]], base: str) -> list[Alias]:
    """Absolute targets, longest prefix first (Apache checks aliases in order; longest wins here).

    An entry is a path, or a per-location dict with its ``path``.
    """
    targets = [(prefix, entry if isinstance(entry, str) else entry["path"]) for prefix, entry in script_alias.items()]
    out = [Alias(prefix, os.path.normpath(os.path.join(base, target)) + ("/" if target.endswith("/") else ""))
           for prefix, target in targets]
    return sorted(out, key=lambda a: len(a.prefix), reverse=True)


def normalize_path(path: str) -> str:
    """Remove dot segments (RFC 3986 §5.2.4) from a decoded path; 400 above the root."""
    if not path.startswith("/"):
        raise BadRequest("request path %r does not start with '/'" % path)
    if "\0" in path:
        raise NotFound("NUL byte in request path %r" % path)
    if "/." not in path:
        return path  # no "." or ".." segment: nothing to remove
    out: list[str] = []
    segments = path.split("/")[1:]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == ".":
            if last:
                out.append("")
            continue
        if seg == "..":
            if not out:
                raise BadRequest("request path %r leaves the root" % path)
            out.pop()
            if last:
                out.append("")
            continue
        out.append(seg)
    return "/" + "/".join(out)


def _prefix_matches(prefix: str, path: str) -> str | None:
    """The rest of ``path`` after ``prefix``, on a segment boundary; None if no match."""
    if prefix.endswith("/"):
        if path.startswith(prefix):
            return path[len(prefix) - 1:]
        if path == prefix[:-1]:
            return ""
        return None
    if path == prefix:
        return ""
    if path.startswith(prefix + "/"):
        return path[len(prefix):]
    return None


def map_request(
    path: str,
    raw_path: str,
    aliases: list[Alias],
    document_root: str | None,
    extensions: list[str],
    accept_path_info: bool = True,
    follow_symlinks: bool = False,
    stat: Callable[[str], os.stat_result] = os.stat,
    realpath: Callable[[str], str] = os.path.realpath,
) -> ScriptTarget:
    """Map a decoded URL path to a script, or raise NotFound/Forbidden/BadRequest.

    ``raw_path`` is the path as the client sent it (still %-encoded): an
    encoded slash is refused with 404, as Apache's AllowEncodedSlashes Off.
    """
    if "%2f" in raw_path.lower():
        raise NotFound("encoded slash in %r" % raw_path)
    path = normalize_path(path)
    for alias in aliases:
        rest = _prefix_matches(alias.prefix, path)
        if rest is None:
            continue
        base = alias.target.rstrip("/") or "/"
        script_prefix = path[: len(path) - len(rest)] if rest else path
        prefix = alias.prefix
        st = _stat(stat, base)
        if not stat_mod.S_ISDIR(st.st_mode):
            # A ScriptAlias to a single file: everything after the prefix is
            # PATH_INFO. The file is the configured target itself, like the
            # directory of a directory alias, so it may be a symbolic link.
            return _checked(ScriptTarget(script_prefix.rstrip("/") if rest.startswith("/") else script_prefix,
                                         rest, base, prefix, alias.target),
                            base, base, accept_path_info, follow_symlinks, realpath)
        return _walk(base, script_prefix.rstrip("/"), rest, prefix, alias.target, None,
                     accept_path_info, follow_symlinks, stat, realpath)
    if document_root is not None:
        return _walk(document_root.rstrip("/") or "/", "", path, "", document_root, extensions,
                     accept_path_info, follow_symlinks, stat, realpath)
    raise Unmapped("no script_alias matches %r" % path)


def _walk(base: str, url_base: str, rest: str, prefix: str, context_root: str,
          extensions: list[str] | None, accept_path_info: bool, follow_symlinks: bool,
          stat: Callable[[str], os.stat_result], realpath: Callable[[str], str]) -> ScriptTarget:
    """Apache's directory walk: the first path segment that is a file is the script."""
    segments = rest.split("/")[1:] if rest else []
    fs_path = base
    url = url_base
    for i, seg in enumerate(segments):
        if seg == "":
            if i == len(segments) - 1:
                break  # trailing slash on a directory
            continue  # "//" is tolerated, as ap_find_path_info does
        fs_path = os.path.join(fs_path, seg)
        url = url + "/" + seg
        st = _stat(stat, fs_path)
        if stat_mod.S_ISDIR(st.st_mode):
            continue
        path_info = "/" + "/".join(segments[i + 1:]) if i + 1 < len(segments) else ""
        # AddHandler extensions are case-insensitive in Apache (mod_mime).
        if extensions is not None and os.path.splitext(fs_path)[1].lower() not in {e.lower() for e in extensions}:
            raise Forbidden("Options ExecCGI is off in this directory: %s (extension not in cgi_extensions)"
                            % fs_path, filename=fs_path)
        target = ScriptTarget(url, path_info, fs_path, prefix, context_root)
        return _checked(target, fs_path, base, accept_path_info, follow_symlinks, realpath)
    raise Forbidden("attempt to invoke directory as script", filename=fs_path, code="AH01265")


def _stat(stat: Callable[[str], os.stat_result], path: str) -> os.stat_result:
    """stat, with Apache's answers: 403 when search permission is missing, else 404."""
    try:
        return stat(path)
    except PermissionError:
        raise Forbidden("access to %s denied because search permissions are missing on a component of the path"
                        % path, filename=path) from None
    except OSError:
        raise NotFound("script not found or unable to stat", filename=path, code="AH01264") from None


def _checked(target: ScriptTarget, fs_path: str, root: str, accept_path_info: bool,
             follow_symlinks: bool, realpath: Callable[[str], str]) -> ScriptTarget:
    if target.path_info and not accept_path_info:
        raise NotFound("AcceptPathInfo off disallows user's path %r for %s"
                       % (target.path_info, target.filename), filename=target.filename)
    if not follow_symlinks:
        real_root = realpath(root)
        real = realpath(fs_path)
        if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
            raise Forbidden("symbolic link from %s leads outside %s (set cgi_follow_symlinks to allow it)"
                            % (fs_path, root), filename=fs_path)
    return target
