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


class Throttle:
    """Which of many similar log lines to write: once per key per ``period``, a few a second in all.

    A flood (thousands of refused connections) must cost a few lines, each
    saying how many were left out, not a line per connection: writing them
    would be the daemon's busiest work, and fill the disk.
    """

    MAX_KEYS = 4096

    def __init__(self, period: float = 60.0, per_second: float = 2.0, burst: int = 20) -> None:
        self.period = period
        self.rate = per_second
        self.burst = burst
        self.tokens = float(burst)
        self.stamp: float | None = None
        self.seen: dict[object, float] = {}
        self.left_out = 0

    def allow(self, key: object, now: float) -> tuple[bool, int]:
        """(write this line?, how many were left out since the last one written)."""
        last = self.seen.get(key)
        if last is not None and now - last < self.period:
            self.left_out += 1
            return False, 0
        if self.stamp is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            self.left_out += 1
            return False, 0
        self.tokens -= 1
        if len(self.seen) >= self.MAX_KEYS:
            self.seen = {k: t for k, t in self.seen.items() if now - t < self.period}
            if len(self.seen) >= self.MAX_KEYS:
                self.seen.clear()
        self.seen[key] = now
        left_out, self.left_out = self.left_out, 0
        return True, left_out
