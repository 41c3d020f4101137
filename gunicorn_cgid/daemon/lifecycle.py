"""Lifecycles as data: the supervisor's view of its daemon, and one connection in the daemon.

Runs in the supervisor and the daemon. Pure: no I/O and no clock of its own
(the caller passes ``now``), so each lifecycle is one enum and one transition
function that a reader can check in one place, and a test can drive without
processes. The callers act on the state that the transition returns.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# -- the supervisor's daemon ---------------------------------------------------

MIN_UPTIME_SECONDS = 1.0      # a daemon dying sooner, or before it served, died "at start"
STABLE_SECONDS = 10.0         # a daemon that served this long wipes the record of earlier deaths
FIRST_BACKOFF_SECONDS = 0.1   # after the first death of a stable daemon the restart is immediate;
MAX_BACKOFF_SECONDS = 10.0    # later ones wait 0.1 s, doubling up to this cap
MAX_QUICK_DEATHS = 5          # deaths at start in a row before giving up (FATAL)


class DaemonState(enum.Enum):
    STARTING = "starting"  # forked; has not reported that it serves
    RUNNING = "running"
    BACKOFF = "backoff"    # died; the next start is due at ``restart_at``
    FATAL = "fatal"        # died at start too often, or cannot start at all; waits for SIGHUP
    STOPPING = "stopping"  # the supervisor is stopping; nothing starts again


class DaemonEvent(enum.Enum):
    START = "start"        # a daemon is being forked
    READY = "ready"        # it reported that it serves
    DIED = "died"          # it exited, was killed, or could not be forked
    UNUSABLE = "unusable"  # it exited saying that no restart can help (privileges...)
    RETRY = "retry"        # SIGHUP: forget past deaths, start again now
    REPLACED = "replaced"  # it was stopped on purpose (a new policy): start the next one now, no death counted
    STOP = "stop"


@dataclass
class DaemonLifecycle:
    """The supervisor's daemon: created when the first daemon is forked (STARTING)."""

    started_at: float
    state: DaemonState = DaemonState.STARTING
    deaths: int = 0            # since the last stable run: sets the backoff
    quick_deaths: int = 0      # at start, in a row: sets FATAL
    restart_at: float | None = None

    def on(self, event: DaemonEvent, now: float) -> DaemonState:
        """The one transition function; returns the new state.

        An event that means nothing in the current state (READY from a
        daemon already reaped, a second DIED) leaves the state as it is.
        """
        S, E = DaemonState, DaemonEvent
        state = self.state
        if state is S.STOPPING:
            return state
        if event is E.STOP:
            self.restart_at = None
            self.state = S.STOPPING
        elif event is E.START and state is S.BACKOFF:
            self.started_at = now
            self.restart_at = None
            self.state = S.STARTING
        elif event is E.READY and state is S.STARTING:
            self.state = S.RUNNING
        elif event is E.UNUSABLE and state in (S.STARTING, S.RUNNING):
            self.restart_at = None
            self.state = S.FATAL
        elif event is E.DIED and state in (S.STARTING, S.RUNNING):
            self._died(now)
        elif event is E.RETRY and state in (S.BACKOFF, S.FATAL):
            self.deaths = self.quick_deaths = 0
            self.restart_at = now
            self.state = S.BACKOFF
        elif event is E.REPLACED and state in (S.STARTING, S.RUNNING):
            self.restart_at = now
            self.state = S.BACKOFF
        return self.state

    def _died(self, now: float) -> None:
        uptime = now - self.started_at
        if uptime >= STABLE_SECONDS:
            self.deaths = 0
        self.deaths += 1
        at_start = self.state is DaemonState.STARTING or uptime < MIN_UPTIME_SECONDS
        self.quick_deaths = self.quick_deaths + 1 if at_start else 0
        if self.quick_deaths >= MAX_QUICK_DEATHS:
            self.restart_at = None
            self.state = DaemonState.FATAL
            return
        self.restart_at = now + backoff_delay(self.deaths)
        self.state = DaemonState.BACKOFF


def backoff_delay(deaths: int) -> float:
    """Seconds before restart number ``deaths``: 0, then 0.1 s doubling to the cap."""
    if deaths <= 1:
        return 0.0
    return min(MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** min(deaths - 2, 32))


# -- one connection in the daemon ----------------------------------------------

class ConnState(enum.Enum):
    IDLE = "idle"            # a worker's connection between its requests (after DONE): nothing sent yet
    READING = "reading"      # reading the SPAWN request and its descriptors
    QUEUED = "queued"        # waiting for a cgi_max_scripts slot
    RUNNING = "running"      # script running, worker connected
    EXITED = "exited"        # script reaped, worker still connected (output may still flow)
    ABANDONED = "abandoned"  # worker gone, script still running: it is being killed
    DONE = "done"            # worker gone and script reaped (or never started)


class ConnEvent(enum.Enum):
    QUEUE = "queue"    # no slot free
    SPAWN = "spawn"    # the script started
    REAP = "reap"      # the script's exit status was collected
    READ = "read"      # the first bytes of a request arrived on an idle connection
    CLOSE = "close"    # the worker's connection is closed (by either side), or its request is DONE


_CONN_NEXT: dict[tuple[ConnState, ConnEvent], ConnState] = {
    (ConnState.IDLE, ConnEvent.READ): ConnState.READING,
    (ConnState.IDLE, ConnEvent.QUEUE): ConnState.QUEUED,
    (ConnState.IDLE, ConnEvent.SPAWN): ConnState.RUNNING,
    (ConnState.IDLE, ConnEvent.CLOSE): ConnState.DONE,
    (ConnState.READING, ConnEvent.QUEUE): ConnState.QUEUED,
    (ConnState.READING, ConnEvent.SPAWN): ConnState.RUNNING,
    (ConnState.QUEUED, ConnEvent.SPAWN): ConnState.RUNNING,
    (ConnState.READING, ConnEvent.CLOSE): ConnState.DONE,
    (ConnState.QUEUED, ConnEvent.CLOSE): ConnState.DONE,
    (ConnState.RUNNING, ConnEvent.REAP): ConnState.EXITED,
    (ConnState.RUNNING, ConnEvent.CLOSE): ConnState.ABANDONED,
    (ConnState.EXITED, ConnEvent.CLOSE): ConnState.DONE,
    (ConnState.ABANDONED, ConnEvent.REAP): ConnState.DONE,
}


class TransitionError(RuntimeError):
    """An event that cannot happen in this state: a bug in the daemon, not bad input."""


def conn_next(state: ConnState, event: ConnEvent) -> ConnState:
    """The one transition function of a connection; raises TransitionError for an impossible event."""
    try:
        return _CONN_NEXT[(state, event)]
    except KeyError:
        raise TransitionError("connection in state %s cannot take event %s"
                              % (state.value, event.value)) from None
