"""gunicorn-cgid: Apache's mod_cgid for gunicorn.

Run ``gunicorn -c gunicorn.conf.py gunicorn_cgid:app`` with
``from gunicorn_cgid.hooks import *`` in the config file. Names are loaded
lazily so that the CGI daemon, which imports this package in a fresh
interpreter, never pays for gunicorn.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app", "on_starting", "on_reload", "post_fork", "pre_request", "on_exit", "pre_exec"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "app":
        from gunicorn_cgid.worker.app import app
        return app
    if name in ("on_starting", "on_reload", "post_fork", "pre_request", "on_exit", "pre_exec"):
        from gunicorn_cgid import hooks
        return getattr(hooks, name)
    raise AttributeError("module 'gunicorn_cgid' has no attribute %r" % name)
