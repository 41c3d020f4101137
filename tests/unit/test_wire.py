"""The ScriptSock frame format: every frame kind, the push decoder, and refusals."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from gunicorn_cgid import wire

REQ = wire.SpawnRequest(
    filename=b"/srv/cgi-bin/env.sh",
    cwd=b"/srv/cgi-bin",
    argv=(b"/srv/cgi-bin/env.sh", b"a b", b""),
    env=(b"PATH=/usr/bin:/bin", b"QUERY_STRING=", b"X==y", b"EMPTY="),
    location="/cgi-bin/",
    max_runtime_ms=1500,
    master_pid=4242,
)


def split(data: bytes) -> wire.Frame:
    """The one frame of ``data``, through the decoder the receiving side uses."""
    kind = data[4]
    dec = wire.request_decoder() if kind in (wire.SPAWN, wire.KILL) else wire.reply_decoder()
    frames = dec.feed(data)
    assert len(frames) == 1 and dec.pending == 0
    return frames[0]


def test_header_layout():
    data = wire.encode_started(77)
    assert data[:5] == struct.pack(">IB", 4, ord("P"))
    assert data[5:] == struct.pack(">I", 77)
    assert wire.frame(wire.KILL) == b"\0\0\0\0K"


def test_spawn_round_trip():
    fr = split(wire.encode_spawn(REQ))
    assert fr.kind == wire.SPAWN
    assert wire.decode_spawn(fr.payload) == REQ


def test_spawn_payload_starts_with_magic():
    payload = wire.encode_spawn(REQ)[wire.HEADER.size:]
    assert payload[:4] == b"CGI3"


def test_spawn_carries_the_location_and_no_limits():
    # The daemon owns every limit: a SPAWN names its location, and only
    # max_runtime (which the daemon never lets exceed its policy) travels.
    payload = wire.encode_spawn(REQ)[wire.HEADER.size:]
    assert payload[:12] == struct.pack(">III", wire.MAGIC, 1500, 4242)
    assert b"/cgi-bin/" in payload
    fields = {f.name for f in wire.SpawnRequest.__dataclass_fields__.values()}
    assert not fields & {"kill_grace_ms", "queue_timeout_ms", "max_scripts"}


def test_rlimits_never_travel():
    # The rlimit fields are the daemon's, filled from its policy: whatever a
    # peer puts in them is not encoded, so the daemon decodes them unset.
    asked = wire.SpawnRequest(b"/x", b"/", (b"/x",), (), rlimit_cpu=10**6, rlimit_mem=2**60, rlimit_nproc=10**6)
    got = wire.decode_spawn(split(wire.encode_spawn(asked)).payload)
    assert (got.rlimit_cpu, got.rlimit_mem, got.rlimit_nproc) == (-1, -1, -1)
    assert wire.encode_spawn(asked) == wire.encode_spawn(wire.SpawnRequest(b"/x", b"/", (b"/x",), ()))


def test_location_round_trips_any_text():
    for location in ("", "/", "/cgi-bin/", "/é/", "/\udcff/"):
        req = wire.SpawnRequest(b"/x", b"/", (b"/x",), (), location=location)
        assert wire.decode_spawn(split(wire.encode_spawn(req)).payload).location == location


def test_spawn_defaults_round_trip():
    req = wire.SpawnRequest(b"/x", b"/", (b"/x",), ())
    assert wire.decode_spawn(split(wire.encode_spawn(req)).payload) == req


def test_started_failed_exited_kill_round_trip():
    assert wire.decode_started(split(wire.encode_started(0xFFFFFFFF)).payload) == 0xFFFFFFFF
    failed = wire.decode_failed(split(wire.encode_failed(wire.FAIL_EXEC, 2, "exec of 'x' failed: ĉ")).payload)
    assert failed == wire.Failed(wire.FAIL_EXEC, 2, "exec of 'x' failed: ĉ")
    refused = wire.encode_failed(wire.FAIL_REFUSED, 403, "file is writable by others: (/x)")
    assert wire.decode_failed(split(refused).payload) == wire.Failed(wire.FAIL_REFUSED, 403,
                                                                     "file is writable by others: (/x)")
    info = wire.Exited(wait_status=7 << 8, wall_us=123456, utime_us=1, stime_us=2, maxrss_kb=3000,
                       reason=wire.REASON_MAX_RUNTIME)
    assert wire.decode_exited(split(wire.encode_exited(info)).payload) == info
    signalled = wire.Exited(9, 1, 0, 0, 0, wire.REASON_KILLED)
    assert wire.decode_exited(split(wire.encode_exited(signalled)).payload) == signalled
    for reason in (wire.REASON_NONE, wire.REASON_KILLED, wire.REASON_DISCONNECT, 255):
        assert wire.decode_kill(split(wire.encode_kill(reason)).payload) == reason


def test_failed_message_is_bounded():
    data = wire.encode_failed(wire.FAIL_REQUEST, 0, "x" * (2 * wire.MAX_REPLY_FRAME_BYTES))
    fr = split(data)  # the reply decoder accepts it, so it is under the limit
    assert len(fr.payload) <= wire.MAX_REPLY_FRAME_BYTES


def test_out_of_range_numbers_are_clamped_not_crashing():
    # cgi_max_runtime has no upper bound: 58 days is 5e9 ms, past a u32.
    req = wire.SpawnRequest(b"/x", b"/", (b"/x",), (), max_runtime_ms=5 * 10**9, master_pid=2**40)
    got = wire.decode_spawn(split(wire.encode_spawn(req)).payload)
    assert got.max_runtime_ms == got.master_pid == 0xFFFFFFFF
    negative = wire.SpawnRequest(b"/x", b"/", (b"/x",), (), max_runtime_ms=-5)
    assert wire.decode_spawn(split(wire.encode_spawn(negative)).payload).max_runtime_ms == 0


def test_decoder_byte_by_byte_and_many_frames():
    stream = wire.encode_started(1) + wire.encode_exited(wire.Exited(0, 1, 2, 3, 4)) + wire.encode_failed(3, 0, "")
    dec = wire.reply_decoder()
    frames = []
    for i in range(len(stream)):
        frames += dec.feed(stream[i:i + 1])
    assert [f.kind for f in frames] == [wire.STARTED, wire.EXITED, wire.FAILED]
    assert dec.pending == 0
    assert wire.reply_decoder().feed(stream) == frames


def test_decoder_holds_incomplete_frame():
    data = wire.encode_spawn(REQ)
    dec = wire.request_decoder()
    assert dec.feed(data[:-1]) == []
    assert dec.pending == len(data) - 1
    assert dec.feed(data[-1:])[0].kind == wire.SPAWN


def test_decoder_refuses_unknown_kind_at_header():
    with pytest.raises(wire.WireError, match="kind"):
        wire.request_decoder().feed(wire.encode_started(1))  # a reply sent to the daemon
    with pytest.raises(wire.WireError, match="kind"):
        wire.reply_decoder().feed(b"\0\0\0\0S")
    with pytest.raises(wire.WireError):
        wire.request_decoder().feed(b"GET / HTTP/1.0\r\n\r\n")


def test_decoder_refuses_oversize_length_before_the_payload():
    dec = wire.request_decoder()
    with pytest.raises(wire.WireError, match="exceeds"):
        dec.feed(struct.pack(">IB", wire.MAX_REQUEST_FRAME_BYTES + 1, wire.SPAWN))
    with pytest.raises(wire.WireError, match="exceeds"):
        wire.reply_decoder().feed(struct.pack(">IB", 0xFFFFFFFF, wire.EXITED))
    # exactly the limit is fine, and only buffered as it arrives
    dec = wire.request_decoder()
    assert dec.feed(struct.pack(">IB", wire.MAX_REQUEST_FRAME_BYTES, wire.SPAWN) + b"x" * 10) == []
    assert dec.pending == 15


def _spawn_payload(**change: object) -> bytes:
    """A SPAWN payload built field by field, with some fields replaced."""
    fields = dict(magic=wire.MAGIC, paths=[b"/x", b"/", b"/loc/"], argv=[b"/x"], env=[b"A=1"])
    fields.update(change)
    argc = fields.get("argc", len(fields["argv"]))  # type: ignore[arg-type]
    envc = fields.get("envc", len(fields["env"]))  # type: ignore[arg-type]
    fixed = struct.pack(">IIIII", fields["magic"], 0, 1, argc, envc)
    strings = [*fields["paths"], *fields["argv"], *fields["env"]]  # type: ignore[misc]
    return fixed + b"".join(s + b"\0" for s in strings)


def test_spawn_builder_matches_encoder():
    assert wire.decode_spawn(_spawn_payload()) == wire.SpawnRequest(b"/x", b"/", (b"/x",), (b"A=1",), "/loc/", 0, 1)
    assert wire.encode_spawn(wire.decode_spawn(_spawn_payload()))[wire.HEADER.size:] == _spawn_payload()


@pytest.mark.parametrize("change, message", [
    (dict(magic=0x47455420), "magic"),
    (dict(magic=0x43474931), "magic"),  # "CGI1": a worker that still sends its limits
    (dict(magic=0x43474932), "magic"),  # "CGI2": length-prefixed strings
    (dict(paths=[b"/x", b"/"]), "make"),
    (dict(paths=[b"/x", b"/", b"", b"/y"]), "make"),
    (dict(paths=[b"x", b"/", b""]), "absolute"),
    (dict(paths=[b"/x", b"rel", b""]), "absolute"),
    (dict(paths=[b"/x", b"/", b"/a\0b/"]), "NUL"),
    (dict(argv=[]), "empty argv"),
    (dict(argv=[b"/x\0y"]), "NUL"),
    (dict(env=[b"NOEQUALS"]), "'='"),
    (dict(env=[b"A=1\0B=2"]), "NUL"),
    (dict(argv=[b"a"] * (wire.MAX_ARGS + 1)), "too many"),
    (dict(argc=2), "make"),
    (dict(envc=0), "make"),
])
def test_decode_spawn_refusals(change, message):
    with pytest.raises(wire.WireError, match=message):
        wire.decode_spawn(_spawn_payload(**change))


def test_decode_spawn_string_counts_are_checked_before_splitting():
    # counts of 4 billion strings are refused at once, whatever follows
    payload = _spawn_payload(argc=0xFFFFFFFF)
    with pytest.raises(wire.WireError, match="too many"):
        wire.decode_spawn(payload)
    with pytest.raises(wire.WireError, match="too many"):
        wire.decode_spawn(_spawn_payload(envc=wire.MAX_ARGS + 1))


def test_decode_spawn_strings_must_end_with_nul():
    with pytest.raises(wire.WireError, match="truncated"):
        wire.decode_spawn(_spawn_payload()[:-1])
    with pytest.raises(wire.WireError, match="truncated"):
        wire.decode_spawn(_spawn_payload()[:10])


def test_encode_spawn_refuses_a_nul_in_any_string():
    for field, value in (("filename", b"/a\0b"), ("cwd", b"/\0"), ("argv", (b"x\0",)), ("env", (b"A=\0",)),
                         ("location", "/l\0/")):
        with pytest.raises(wire.WireError, match="NUL"):
            wire.encode_spawn(dataclasses.replace(REQ, **{field: value}))


def test_trailing_bytes_refused():
    with pytest.raises(wire.WireError, match="trailing"):
        wire.decode_spawn(_spawn_payload() + b"\0")
    with pytest.raises(wire.WireError, match="trailing"):
        wire.decode_started(struct.pack(">I", 1) + b"x")
    with pytest.raises(wire.WireError, match="trailing"):
        wire.decode_kill(b"\1\1")
    with pytest.raises(wire.WireError, match="trailing"):
        wire.decode_exited(wire.encode_exited(wire.Exited(0, 0, 0, 0, 0))[5:] + b"\0")


def test_every_truncation_raises_wire_error():
    cases = [
        (wire.decode_spawn, wire.encode_spawn(REQ)),
        (wire.decode_started, wire.encode_started(5)),
        (wire.decode_exited, wire.encode_exited(wire.Exited(1, 2, 3, 4, 5, 1))),
        (wire.decode_kill, wire.encode_kill()),
        (wire.decode_failed, wire.encode_failed(1, 2, "")),
    ]
    for decode, data in cases:
        payload = data[wire.HEADER.size:]
        for cut in range(len(payload)):
            if decode is wire.decode_failed and cut >= 5:
                continue  # the message is free text: any length is whole
            with pytest.raises(wire.WireError):
                decode(payload[:cut])


def test_wire_error_is_a_value_error():
    assert issubclass(wire.WireError, ValueError)
