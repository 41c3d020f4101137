"""Property tests for the ScriptSock wire format."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from gunicorn_cgid import wire

_u32 = st.integers(0, 0xFFFFFFFF)
_i64 = st.integers(-1, 2**63 - 1)
_any_int = st.integers(-(2**70), 2**70)
_text = st.binary(max_size=40).filter(lambda b: b"\0" not in b)
_abs_path = _text.map(lambda b: b"/" + b)
_env_item = st.tuples(_text.filter(lambda b: b"=" not in b), _text).map(lambda kv: kv[0] + b"=" + kv[1])

spawn_requests = st.builds(
    wire.SpawnRequest,
    filename=_abs_path,
    cwd=_abs_path,
    argv=st.lists(_text, min_size=1, max_size=8).map(tuple),
    env=st.lists(_env_item, max_size=12).map(tuple),
    location=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30),
    max_runtime_ms=_u32, master_pid=_u32,
)
exits = st.builds(
    wire.Exited,
    wait_status=st.integers(-(2**31), 2**31 - 1),
    wall_us=st.integers(0, 2**64 - 1), utime_us=st.integers(0, 2**64 - 1),
    stime_us=st.integers(0, 2**64 - 1), maxrss_kb=st.integers(0, 2**64 - 1),
    reason=st.integers(0, 255),
)

request_frames = st.one_of(
    spawn_requests.map(wire.encode_spawn),
    st.integers(0, 255).map(wire.encode_kill),
)
reply_frames = st.one_of(
    _u32.map(wire.encode_started),
    st.builds(wire.encode_failed, st.integers(0, 255), st.integers(-(2**31), 2**31 - 1), st.text(max_size=60)),
    exits.map(wire.encode_exited),
)

DECODERS = [wire.decode_spawn, wire.decode_started, wire.decode_failed, wire.decode_exited, wire.decode_kill]


@given(spawn_requests)
def test_spawn_round_trip(req):
    frames = wire.request_decoder().feed(wire.encode_spawn(req))
    assert len(frames) == 1 and frames[0].kind == wire.SPAWN
    assert wire.decode_spawn(frames[0].payload) == req


@given(spawn_requests, _i64, _i64, _i64)
def test_rlimits_asked_for_never_reach_the_daemon(req, cpu, mem, nproc):
    # Whatever a peer puts in the daemon-side fields, the frame is the same
    # and the daemon decodes them unset: only its policy sets them.
    asked = dataclasses.replace(req, rlimit_cpu=cpu, rlimit_mem=mem, rlimit_nproc=nproc)
    assert wire.encode_spawn(asked) == wire.encode_spawn(req)
    (fr,) = wire.request_decoder().feed(wire.encode_spawn(asked))
    got = wire.decode_spawn(fr.payload)
    assert (got.rlimit_cpu, got.rlimit_mem, got.rlimit_nproc) == (-1, -1, -1)


@given(spawn_requests, _any_int, _any_int)
def test_numbers_out_of_range_are_clamped_to_their_field(req, runtime, master):
    asked = dataclasses.replace(req, max_runtime_ms=runtime, master_pid=master)
    (fr,) = wire.request_decoder().feed(wire.encode_spawn(asked))
    got = wire.decode_spawn(fr.payload)
    assert got.max_runtime_ms == min(max(runtime, 0), 0xFFFFFFFF)
    assert got.master_pid == min(max(master, 0), 0xFFFFFFFF)


@given(exits)
def test_exited_round_trip(info):
    (fr,) = wire.reply_decoder().feed(wire.encode_exited(info))
    assert wire.decode_exited(fr.payload) == info


@given(_u32, st.integers(0, 255), st.integers(0, 255), st.integers(-(2**31), 2**31 - 1), st.text(max_size=200))
def test_small_frames_round_trip(pid, reason, code, err, message):
    (fr,) = wire.reply_decoder().feed(wire.encode_started(pid))
    assert wire.decode_started(fr.payload) == pid
    (fr,) = wire.request_decoder().feed(wire.encode_kill(reason))
    assert wire.decode_kill(fr.payload) == reason
    (fr,) = wire.reply_decoder().feed(wire.encode_failed(code, err, message))
    failed = wire.decode_failed(fr.payload)
    assert (failed.code, failed.errno) == (code, err)
    assert failed.message == message.encode("utf-8", "replace").decode("utf-8", "replace")


def _cut(data: bytes, points: list[int]) -> list[bytes]:
    cuts = sorted({p % (len(data) + 1) for p in points})
    pieces, start = [], 0
    for c in cuts + [len(data)]:
        pieces.append(data[start:c])
        start = c
    return pieces


@given(st.lists(request_frames, min_size=1, max_size=6), st.lists(st.integers(0, 10**6), max_size=20))
def test_request_decoder_split_anywhere(frames, points):
    stream = b"".join(frames)
    whole = wire.request_decoder().feed(stream)
    dec = wire.request_decoder()
    parts = []
    for piece in _cut(stream, points):
        parts += dec.feed(piece)
    assert parts == whole
    assert len(whole) == len(frames)
    assert dec.pending == 0


@given(st.lists(reply_frames, min_size=1, max_size=6), st.lists(st.integers(0, 10**6), max_size=20))
def test_reply_decoder_split_anywhere(frames, points):
    stream = b"".join(frames)
    dec = wire.reply_decoder()
    parts = []
    for piece in _cut(stream, points):
        parts += dec.feed(piece)
    assert [wire.HEADER.pack(len(f.payload), f.kind) + f.payload for f in parts] == frames
    assert dec.pending == 0


def _feed_all(dec: wire.FrameDecoder, pieces: list[bytes]) -> None:
    """Feed until the end or the first WireError; only WireError may escape, and the buffer stays bounded."""
    for piece in pieces:
        try:
            dec.feed(piece)
        except wire.WireError:
            return
        assert dec.pending < wire.HEADER.size + dec.max_bytes


@settings(max_examples=300)
@given(st.binary(max_size=600), st.lists(st.integers(0, 10**6), max_size=10), st.booleans())
def test_random_bytes_only_wire_error(data, points, requests):
    dec = wire.request_decoder() if requests else wire.reply_decoder()
    _feed_all(dec, _cut(data, points))


@settings(max_examples=200)
@given(st.integers(0, 0xFFFFFFFF), st.integers(0, 255), st.binary(max_size=64))
def test_any_header_is_checked_before_buffering(length, kind, rest):
    dec = wire.FrameDecoder(frozenset((wire.SPAWN, wire.KILL)), 1024)
    try:
        frames = dec.feed(wire.HEADER.pack(length, kind))
    except wire.WireError:
        assert kind not in dec.kinds or length > dec.max_bytes
        return
    assert kind in dec.kinds and length <= dec.max_bytes
    assert (frames, dec.pending) == (([wire.Frame(kind, b"")], 0) if length == 0 else ([], wire.HEADER.size))
    _feed_all(dec, [rest])


@settings(max_examples=300)
@given(st.sampled_from(DECODERS), st.binary(max_size=300))
def test_payload_decoders_raise_only_wire_error(decode, payload):
    try:
        decode(payload)
    except wire.WireError:
        pass


@given(spawn_requests, st.data())
def test_truncated_or_corrupted_spawn_raises_only_wire_error(req, data):
    payload = wire.encode_spawn(req)[wire.HEADER.size:]
    cut = data.draw(st.integers(0, len(payload) - 1))
    try:
        wire.decode_spawn(payload[:cut])
    except wire.WireError:
        pass
    else:
        raise AssertionError("a truncated SPAWN payload decoded")
    pos = data.draw(st.integers(0, len(payload) - 1))
    flipped = payload[:pos] + bytes([payload[pos] ^ data.draw(st.integers(1, 255))]) + payload[pos + 1:]
    try:
        wire.decode_spawn(flipped)
    except wire.WireError:
        pass


@given(spawn_requests, st.binary(min_size=1, max_size=50))
def test_trailing_garbage_in_spawn_refused(req, extra):
    payload = wire.encode_spawn(req)[wire.HEADER.size:]
    try:
        wire.decode_spawn(payload + extra)
    except wire.WireError:
        return
    raise AssertionError("trailing bytes accepted")
