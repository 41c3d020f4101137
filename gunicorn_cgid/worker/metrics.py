"""statsd counters and timers for CGI scripts, through gunicorn's own statsd logger.

Runs in the worker. When ``statsd_host`` is set gunicorn's logger is its
Statsd class, which can send metrics; with any other logger these are no-ops.
Names: ``cgi.spawns``, ``cgi.spawn_latency`` (ms), ``cgi.running`` (gauge
deltas), ``cgi.exits.ok|error|signal``, ``cgi.timeouts``, ``cgi.kills``,
``cgi.duration`` (ms).
"""

from __future__ import annotations

from typing import Any

from gunicorn_cgid.worker import context


def _logger() -> Any:
    ctx = context.current()
    log = ctx.log if ctx is not None else None
    return log if log is not None and hasattr(log, "increment") else None


def spawned(latency_ms: float) -> None:
    log = _logger()
    if log is not None:
        log.increment("cgi.spawns", 1)
        log.timer("cgi.spawn_latency", "%.3f" % latency_ms)
        log.gauge("cgi.running", "+1")


def exited(kind: str, duration_ms: float, killed: bool) -> None:
    """``kind`` is ok, error or signal."""
    log = _logger()
    if log is not None:
        log.gauge("cgi.running", "-1")
        log.increment("cgi.exits.%s" % kind, 1)
        log.timer("cgi.duration", "%.3f" % duration_ms)
        if killed:
            log.increment("cgi.kills", 1)


def timed_out() -> None:
    log = _logger()
    if log is not None:
        log.increment("cgi.timeouts", 1)
