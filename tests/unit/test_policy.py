"""The daemon's policy: built from the settings, handed over as frames, and the clamp no request escapes."""

from __future__ import annotations

import os
import socket

import pytest
from gunicorn.config import Config
from hypothesis import given
from hypothesis import strategies as st

from gunicorn_cgid import settings, wire
from gunicorn_cgid.daemon import policy
from gunicorn_cgid.daemon.log import Throttle
from gunicorn_cgid.daemon.server import Conn, Daemon
from gunicorn_cgid.hooks import build_policy

POLICY = policy.Policy(
    kill_grace_ms=250, max_scripts=4, queue_timeout_ms=7000, rlimit_cpu=5, rlimit_mem=1 << 30, rlimit_nproc=60,
    locations={"": policy.Location(max_runtime_ms=5000),
               "/cgi-bin/": policy.Location(root="/srv/cgi-bin", max_runtime_ms=5000, env_keep=("A",)),
               "/none/": policy.Location(root="/srv/none")})


# -- the clamp ---------------------------------------------------------------------

@pytest.mark.parametrize("allowed, asked, granted", [
    (5000, 0, 5000),        # nothing asked: the policy's
    (5000, 60000, 5000),    # more asked: the policy's
    (5000, 2**32 - 1, 5000),
    (5000, 200, 200),       # less asked: granted
    (0, 0, 0),              # no limit anywhere
    (0, 300, 300),          # no policy limit: a request may still shorten its own run
])
def test_max_runtime_is_the_policy_or_less(allowed, asked, granted):
    assert policy.max_runtime_ms(policy.Location(max_runtime_ms=allowed), asked) == granted


@given(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_no_request_gets_more_run_time_than_the_policy(allowed, asked):
    granted = policy.max_runtime_ms(policy.Location(max_runtime_ms=allowed), asked)
    if allowed:
        assert 0 < granted <= allowed
    if asked:
        assert 0 < granted <= asked
    assert granted in (allowed, asked)


def _daemon(pol: policy.Policy) -> Daemon:
    listener = socket.socket(socket.AF_UNIX)
    return Daemon(listener, master_pid=4242, rules=(pol, {}))


def _conn(req: wire.SpawnRequest) -> Conn:
    ours, _theirs = socket.socketpair()
    conn = Conn(ours, (1, os.geteuid(), os.getegid()))
    conn.req = req
    return conn


def test_the_daemon_fills_the_limits_from_its_policy_whatever_the_request_says():
    daemon = _daemon(POLICY)
    asked = wire.SpawnRequest(b"/srv/cgi-bin/x", b"/srv/cgi-bin", (b"/srv/cgi-bin/x",), (), location="/cgi-bin/",
                              max_runtime_ms=10**9, master_pid=4242, rlimit_cpu=10**6, rlimit_mem=-1,
                              rlimit_nproc=10**6)
    req, _start = daemon._launch(_conn(asked))
    assert (req.max_runtime_ms, req.rlimit_cpu, req.rlimit_mem, req.rlimit_nproc) == (5000, 5, 1 << 30, 60)
    assert daemon._grace() == 0.25
    shorter, _start = daemon._launch(_conn(wire.SpawnRequest(b"/x", b"/", (b"/x",), (), location="/none/",
                                                             max_runtime_ms=100)))
    assert shorter.max_runtime_ms == 100


def test_a_location_the_policy_lacks_is_refused():
    daemon = _daemon(POLICY)
    with pytest.raises(ValueError, match="'/elsewhere/'"):
        daemon._launch(_conn(wire.SpawnRequest(b"/x", b"/", (b"/x",), (), location="/elsewhere/")))


def test_a_new_policy_holds_for_what_starts_next():
    daemon = _daemon(POLICY)
    daemon.apply_policy(policy.Policy(max_scripts=1, locations={"": policy.Location(max_runtime_ms=100)}))
    assert daemon.policy.max_scripts == 1
    req, _start = daemon._launch(_conn(wire.SpawnRequest(b"/x", b"/", (b"/x",), (), max_runtime_ms=60000)))
    assert req.max_runtime_ms == 100


def test_a_policy_needing_run_as_is_refused_by_a_daemon_without_the_means(monkeypatch):
    from gunicorn_cgid.daemon import server
    daemon = _daemon(POLICY)
    run_as = policy.Policy(locations={"": policy.Location(), "/u/": policy.Location(user="someone")})
    monkeypatch.setattr(server, "resolve_accounts", lambda pol: {"/u/": object()})
    daemon.apply_policy(run_as)
    assert daemon.policy is POLICY


# -- the frames --------------------------------------------------------------------

def test_policy_frames_round_trip_split_anywhere():
    other = policy.Policy(allow_root=True, locations={"": policy.Location(),
                                                      "/git/": policy.Location(root="/usr/lib/git-core/x",
                                                                               user="git", group=1000,
                                                                               interpreters=("/usr/bin/php-cgi",))})
    stream = policy.encode(POLICY) + policy.encode(other)
    for cut in range(0, len(stream), 7):
        reader = policy.PolicyReader()
        got = reader.feed(stream[:cut]) + reader.feed(stream[cut:])
        assert got == [POLICY, other]
        assert not reader.buffer


@pytest.mark.parametrize("body, message", [
    (b"not json", "not JSON"),
    (b"{}", "version"),
    (b'{"version": 1, "locations": {}}', "document root"),
    (b'{"version": 1, "locations": {"": {"max_runtime_ms": 0}}, "allow_root": 1}', "allow_root"),
    (b'{"version": 1, "locations": {"": {"max_runtime_ms": -1}}, "allow_root": false}', "max_runtime_ms"),
    (b'{"version": 1, "locations": {"": {"max_runtime_ms": 0, "user": []}}, "allow_root": false}', "user"),
    (b'{"version": 1, "locations": {"": {"max_runtime_ms": 0, "env_keep": "A"}}, "allow_root": false}',
     "env_keep"),
])
def test_bad_policy_frames_are_refused(body, message):
    with pytest.raises(policy.PolicyError, match=message):
        policy.PolicyReader().feed(len(body).to_bytes(4, "big") + body)


def test_an_oversize_policy_frame_is_refused_at_its_length():
    with pytest.raises(policy.PolicyError, match="exceeds"):
        policy.PolicyReader().feed((policy.MAX_POLICY_BYTES + 1).to_bytes(4, "big"))


# -- never root -----------------------------------------------------------------------

@pytest.mark.parametrize("euid, uid, gid, names", [
    (0, 0, 0, ["uid 0", "user", "group", "cgi_allow_root"]),
    (0, 0, 65534, ["uid 0", "user"]),
    (0, 65534, 0, ["gid 0", "group", "cgi_allow_root"]),
    (1000, 1000, 0, ["gid 0", "primary group", "cgi_allow_root"]),
])
def test_scripts_never_run_as_root_unless_allowed(euid, uid, gid, names):
    why = policy.root_refusal(euid, uid, gid, allow_root=False)
    assert why is not None and all(name in why for name in names), why
    assert policy.root_refusal(euid, uid, gid, allow_root=True) is None


def test_unprivileged_ids_pass():
    assert policy.root_refusal(0, 65534, 65534, allow_root=False) is None
    assert policy.root_refusal(1000, 1000, 1000, allow_root=False) is None


# -- from the settings ------------------------------------------------------------------

def _config(values: dict[str, object]) -> Config:
    cfg = Config()
    settings.inject(cfg, {})
    for name, value in values.items():
        cfg.set(name, value)
    return cfg


def test_build_policy_from_the_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _config({
        "cgi_max_runtime": 2.5, "cgi_kill_grace": 0.0004, "cgi_max_scripts": 3, "cgi_queue_timeout": 1,
        "cgi_rlimit_cpu": 9, "cgi_allow_root": True, "cgi_env": {"GLOBAL": "1"}, "cgi_pass_env": ["TZ"],
        "cgi_interpreters": {".php": "/usr/bin/php-cgi"},
        "script_alias": {"/cgi-bin/": "cgi-bin/",
                         "/git/": {"path": "/usr/lib/git-core/git-http-backend", "max_runtime": 0.0002,
                                   "env": {"GIT_PROJECT_ROOT": "/srv/git"}, "user": "git", "group": "git",
                                   "interpreters": {".pl": "/usr/bin/perl"}}},
    })
    pol = build_policy(cfg)
    assert (pol.kill_grace_ms, pol.max_scripts, pol.queue_timeout_ms) == (1, 3, 1000)  # rounded up, never 0
    assert (pol.rlimit_cpu, pol.rlimit_mem, pol.rlimit_nproc, pol.allow_root) == (9, -1, -1, True)
    assert set(pol.locations) == {"", "/cgi-bin/", "/git/"}
    assert pol.locations[""] == policy.Location(root="", max_runtime_ms=2500, env_keep=("GLOBAL", "TZ"),
                                                interpreters=("/usr/bin/php-cgi",))
    assert pol.locations["/cgi-bin/"].root == str(tmp_path / "cgi-bin")
    git = pol.locations["/git/"]
    assert (git.root, git.max_runtime_ms, git.user, git.group) == ("/usr/lib/git-core/git-http-backend", 1, "git",
                                                                   "git")
    assert git.env_keep == ("GIT_PROJECT_ROOT", "GLOBAL", "TZ")
    assert git.interpreters == ("/usr/bin/perl", "/usr/bin/php-cgi")
    assert pol.needs_setid
    assert policy.PolicyReader().feed(policy.encode(pol)) == [pol]


def test_a_chosen_path_is_kept_for_run_as_scripts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "PATH" in build_policy(_config({"cgi_path": "/opt/bin:/usr/bin"})).locations[""].env_keep
    assert "PATH" not in build_policy(_config({})).locations[""].env_keep


# -- log lines under a flood ---------------------------------------------------------------

def test_throttle_once_per_key_and_a_few_a_second():
    t = Throttle(period=60.0, per_second=2.0, burst=3)
    assert t.allow("a", 0.0) == (True, 0)
    assert t.allow("a", 0.0) == (False, 0)       # the same peer within the period
    assert t.allow("b", 0.0) == (True, 1)        # written, saying one line was left out before it
    assert t.allow("c", 0.0) == (True, 0)
    assert t.allow("d", 0.0) == (False, 0)       # the burst of 3 is spent
    assert t.allow("e", 0.5) == (True, 1)        # refilled at 2 a second
    assert t.allow("a", 61.0)[0]                 # the period over: once more
