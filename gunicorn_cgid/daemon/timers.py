"""Deadlines in one heap, for the daemon's and the supervisor's select loops.

Runs in the daemon and the supervisor. Scanning every connection for its
deadline on each loop iteration costs O(connections) per wake-up; a heap
gives the next deadline in O(1) and adds one in O(log n). A cancelled timer
stays in the heap and is skipped when it comes up (lazy invalidation); the
heap is rebuilt when cancelled entries outnumber live ones, so a busy daemon
that cancels a read deadline per request keeps it small.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

COMPACT_MIN_ENTRIES = 1024


class Timer:
    """A callback due at ``when`` (time.monotonic seconds)."""

    __slots__ = ("when", "callback", "args", "cancelled")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False


class Timers:
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()  # ties run in the order they were scheduled
        self._cancelled = 0

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> Timer:
        timer = Timer(when, callback, args)
        heapq.heappush(self._heap, (when, next(self._seq), timer))
        return timer

    def cancel(self, timer: Timer | None) -> None:
        """Cancel ``timer`` (None and already cancelled or run timers are ignored)."""
        if timer is None or timer.cancelled:
            return
        timer.cancelled = True
        self._cancelled += 1
        if self._cancelled > COMPACT_MIN_ENTRIES and self._cancelled * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].cancelled]
            heapq.heapify(self._heap)
            self._cancelled = 0

    def next_when(self) -> float | None:
        """When the earliest live timer is due, or None."""
        heap = self._heap
        while heap and heap[0][2].cancelled:
            heapq.heappop(heap)
            self._cancelled -= 1
        return heap[0][0] if heap else None

    def run_due(self, now: float) -> None:
        """Run every timer due by ``now``; one may schedule or cancel others."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            _when, _seq, timer = heapq.heappop(heap)
            if timer.cancelled:
                self._cancelled -= 1
                continue
            timer.cancelled = True  # run once; a later cancel() is a no-op
            timer.callback(*timer.args)

    def __len__(self) -> int:
        return len(self._heap) - self._cancelled
