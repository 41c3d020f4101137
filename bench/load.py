"""Load generation: wrk when installed, else a small threaded http.client loop."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from procs import BenchError

MIB = 1024 * 1024


@dataclass(frozen=True)
class Scenario:
    name: str
    path: str
    connections: int
    method: str = "GET"
    body_size: int = 0
    keepalive: bool = True
    expect: str = "hello"  # "hello", "big" (1 MiB body) or "length" (the request body's size)

    @property
    def unit(self) -> str:
        """What the scenario is compared by: requests or bytes per second."""
        return "MiB/s" if self.expect in ("big", "length") else "req/s"

    def check(self, status: int, body: bytes) -> str | None:
        """Why a sample response is wrong, or None when it is right."""
        if status != 200:
            title = re.search(rb"<title>(.*?)</title>", body, re.IGNORECASE | re.DOTALL)
            return f"HTTP {status} {(title.group(1) if title else body[:80])!r}"
        if self.expect == "big":
            if len(body) != MIB:
                return f"body is {len(body)} bytes, expected {MIB}"
        elif self.expect == "length":
            if body.strip() != str(self.body_size).encode():
                return f"body {body[:100]!r}, expected {self.body_size}"
        elif body != b"hello\n":
            return f"body {body[:100]!r}, expected b'hello\\n'"
        return None


@dataclass
class Result:
    requests: int = 0
    duration: float = 0.0
    bytes: int = 0  # received by the client plus request bodies sent
    p50_ms: float | None = None
    p99_ms: float | None = None
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)  # "status", "read", "timeout"... -> count
    error: str | None = None  # set when the cell could not be measured
    cpu_us: dict[str, float] = field(default_factory=dict)  # role -> CPU µs per request
    pss_mib: float | None = None  # peak PSS of the server's whole process tree
    other_pct: float | None = None  # CPU used by other work on the machine meanwhile, % of one CPU

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration > 0 else 0.0

    @property
    def mibps(self) -> float:
        return self.bytes / MIB / self.duration if self.duration > 0 else 0.0

    def value(self, unit: str) -> float:
        return self.mibps if unit == "MiB/s" else self.rps


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------
# wrk


WRK_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT {\"duration_us\": %d, \"requests\": %d, \"bytes\": %d, " ..
    "\"connect\": %d, \"read\": %d, \"write\": %d, \"status\": %d, " ..
    "\"timeout\": %d, \"p50_us\": %d, \"p99_us\": %d}\n",
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def parse_wrk(out: str, body_size: int) -> Result:
    m = re.search(r"^BENCH_RESULT (\{.*\})$", out, re.MULTILINE)
    if not m:
        raise BenchError(f"cannot parse wrk output:\n{out}")
    d = json.loads(m.group(1))
    return Result(
        requests=d["requests"], duration=d["duration_us"] / 1e6,
        bytes=d["bytes"] + d["requests"] * body_size,
        p50_ms=d["p50_us"] / 1e3 if d["requests"] else None,
        p99_ms=d["p99_us"] / 1e3 if d["requests"] else None,
        errors=d["status"] + d["connect"] + d["read"] + d["write"] + d["timeout"],
        error_kinds={k: d[k] for k in ("status", "connect", "read", "write", "timeout") if d[k]},
    )


def wrk_script(sc: Scenario, tmp: Path) -> Path:
    script = tmp / "wrk" / f"{sc.method.lower()}-{sc.body_size}-{'ka' if sc.keepalive else 'close'}.lua"
    if script.exists():
        return script
    script.parent.mkdir(exist_ok=True)
    prelude = ""
    if not sc.keepalive:
        prelude += 'wrk.headers["Connection"] = "close"\n'
    if sc.body_size:
        body = tmp / "wrk" / f"body-{sc.body_size}.bin"
        if not body.exists():
            body.write_bytes(os.urandom(sc.body_size))
        prelude += (
            f'wrk.method = "{sc.method}"\n'
            'wrk.headers["Content-Type"] = "application/octet-stream"\n'
            f'local f = assert(io.open("{body}", "rb"))\n'
            'wrk.body = f:read("*a")\n'
            "f:close()\n"
        )
    script.write_text(prelude + WRK_DONE)
    return script


def run_wrk(port: int, sc: Scenario, duration: float, tmp: Path) -> Result:
    secs = max(1, round(duration))
    argv = [
        "wrk", "-t", "1", "-c", str(sc.connections), "-d", f"{secs}s",
        "--timeout", "10s", "--latency", "-s", str(wrk_script(sc, tmp)),
        f"http://127.0.0.1:{port}{sc.path}",
    ]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=secs + 30)
    except subprocess.TimeoutExpired:
        raise BenchError("wrk did not finish in time") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        raise BenchError(f"wrk failed ({proc.returncode}):\n{out}")
    return parse_wrk(out, sc.body_size)


# --------------------------------------------------------------------------
# the Python fallback


def run_python_client(port: int, sc: Scenario, duration: float) -> Result:
    """One thread per connection, http.client, keep-alive unless the scenario
    says otherwise. Costs far more CPU per request than wrk: compare ratios only."""
    body = os.urandom(sc.body_size) if sc.body_size else None
    headers = {"Content-Type": "application/octet-stream"} if body is not None else {}
    if not sc.keepalive:
        headers["Connection"] = "close"
    lock = threading.Lock()
    latencies: list[float] = []
    totals = {"bytes": 0, "errors": 0}
    start = time.monotonic()
    stop_at = start + duration

    def worker() -> None:
        local_lat: list[float] = []
        nbytes = errors = 0
        conn = None
        while time.monotonic() < stop_at:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            t0 = time.perf_counter()
            try:
                conn.request(sc.method, sc.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
                conn = None
                continue
            local_lat.append((time.perf_counter() - t0) * 1e3)
            nbytes += len(data) + len(str(resp.msg)) + 17 + sc.body_size
            if not 200 <= resp.status < 300:
                errors += 1
            if resp.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()
        with lock:
            latencies.extend(local_lat)
            totals["bytes"] += nbytes
            totals["errors"] += errors

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(sc.connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=duration + 30)
    elapsed = time.monotonic() - start
    if any(t.is_alive() for t in threads):
        raise BenchError("python load generator did not finish in time")
    res = Result(requests=len(latencies), duration=elapsed, bytes=totals["bytes"], errors=totals["errors"])
    if len(latencies) >= 2:
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        res.p50_ms, res.p99_ms = q[49], q[98]
    return res
