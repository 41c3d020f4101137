"""The ``gunicorn-cgid`` command: gunicorn with our settings registered and our hooks wired.

Runs in the master. It imports ``gunicorn_cgid.settings`` before gunicorn
builds its ``Config``, so every CGI setting also works as a command-line flag
(``--script-sock PATH``) and in ``GUNICORN_CMD_ARGS``, and it calls our hooks
before any hooks the config file defines. The application defaults to
``gunicorn_cgid:app``.
"""

from __future__ import annotations

import sys
from typing import Any

from gunicorn.app.wsgiapp import WSGIApplication

from gunicorn_cgid import hooks, settings  # noqa: F401  (registers the settings)

DEFAULT_APP = "gunicorn_cgid:app"


def _chain1(ours: Any, theirs: Any) -> Any:
    def hook(server: Any) -> None:
        ours(server)
        theirs(server)
    return hook


def _chain2(ours: Any, theirs: Any) -> Any:
    def hook(server: Any, worker: Any) -> None:
        ours(server, worker)
        theirs(server, worker)
    return hook


class CGIApplication(WSGIApplication):
    """gunicorn's WSGI application with the CGI daemon's hooks always installed."""

    def init(self, parser: Any, opts: Any, args: list[str]) -> Any:
        if not args and not getattr(opts, "wsgi_app", None) and not self.cfg.wsgi_app:
            args = [DEFAULT_APP]
        return super().init(parser, opts, args)

    def load_config(self) -> None:
        super().load_config()
        for name, chain in (("on_starting", _chain1), ("on_reload", _chain1), ("on_exit", _chain1),
                            ("pre_exec", _chain1), ("post_fork", _chain2)):
            ours = getattr(hooks, name)
            theirs = self.cfg.settings[name].value
            if theirs is ours or getattr(theirs, "__wrapped_cgid__", False):
                continue
            combined = chain(ours, theirs)
            combined.__wrapped_cgid__ = True  # type: ignore[attr-defined]
            self.cfg.set(name, combined)


def main() -> None:
    CGIApplication("%(prog)s [OPTIONS] [APP_MODULE]", prog="gunicorn-cgid").run()


if __name__ == "__main__":
    sys.exit(main())
