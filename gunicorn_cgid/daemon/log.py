"""One-line log records for the supervisor and the daemon, in gunicorn's layout.

Runs in the supervisor and the daemon, which never import gunicorn (or the
``logging`` package): each record is one ``write`` to stderr, which the
supervisor points at gunicorn's error log.
"""

from __future__ import annotations

import os
import sys
import time

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_threshold = LEVELS["info"]


def set_level(name: str) -> None:
    global _threshold
    _threshold = LEVELS.get(name.lower(), LEVELS["info"])


def log(level: str, fmt: str, *args: object) -> None:
    """Write ``[time] [pid] [LEVEL] message`` as gunicorn's error log does."""
    if LEVELS[level] < _threshold:
        return
    msg = fmt % args if args else fmt
    stamp = time.strftime("[%Y-%m-%d %H:%M:%S %z]")
    line = "%s [%d] [%s] %s\n" % (stamp, os.getpid(), level.upper(), msg.replace("\n", "\\n"))
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
