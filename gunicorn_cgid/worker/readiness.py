"""Which descriptors are ready now, without waiting: the same answer under gthread and gevent, cheaper under gevent.

gevent's cooperative ``select.poll`` sets up and tears down a libev watcher
for every descriptor on every call, even when the answer is already there
(a script's output and its exit report often are by the time the worker
looks). The original poll with a zero timeout never blocks, so a greenlet
may call it: the worker asks it first, and waits cooperatively only when
nothing is ready.
"""

from __future__ import annotations

import select
from collections.abc import Iterable
from typing import Any

_original: Any = None


def cooperative() -> bool:
    """Whether ``select.poll`` is gevent's (looked up at call time: the worker patches after import)."""
    return select.poll.__module__ != "select"


def ready_now(fds: Iterable[int], events: int) -> list[tuple[int, int]]:
    """(fd, revents) of the descriptors ready at once; never waits, never switches greenlets."""
    global _original
    if _original is None:
        if cooperative():
            from gevent.monkey import get_original
            _original = get_original("select", "poll")
        else:
            _original = select.poll
    poller = _original()
    for fd in fds:
        poller.register(fd, events)
    return poller.poll(0)
