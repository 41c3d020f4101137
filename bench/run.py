#!/usr/bin/env python3
"""Benchmark gunicorn-cgid against Apache mod_cgid, nginx + fcgiwrap and lighttpd mod_cgi.

    python bench/run.py                # every server, every scenario, writes results.md + results.png
    python bench/run.py --smoke        # a few seconds, gunicorn-cgid alone: for CI

Everything runs on 127.0.0.1 inside a fresh temporary directory: the C CGI
programs are compiled there, each server gets a generated configuration,
and all servers stay up for the whole run. Scenarios are interleaved: each
one is measured against every server in turn, seconds apart, so drift of the
machine hits all of them alike. See bench/README.md.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from load import MIB, Result, Scenario, http_request, run_python_client, run_wrk
from procs import (
    BenchError,
    Cgroups,
    PeakPss,
    cpu_between,
    cpu_snapshot,
    machine_busy,
    one_line,
    own_cpu,
    stop_all,
)
from report import best_peer, fmt, machine, markdown, write_chart
from servers import (
    READY_TIMEOUT,
    SERVER_KEYS,
    Context,
    GunicornCgid,
    Server,
    gunicorn_env,
    gunicorn_settings,
    h1c_version,
    make_servers,
    python_usable_by,
    unprivileged_user,
)

BENCH_DIR = Path(__file__).resolve().parent
CGI_SRC = BENCH_DIR / "cgi-bin"

SCENARIOS = (
    Scenario("hello c=1", "/cgi-bin/hello", 1),
    Scenario("hello c=16", "/cgi-bin/hello", 16),
    Scenario("hello c=64", "/cgi-bin/hello", 64),
    Scenario("hello c=256", "/cgi-bin/hello", 256),
    Scenario("hello c=16 no keep-alive", "/cgi-bin/hello", 16, keepalive=False),
    Scenario("1 MiB response c=8", "/cgi-bin/big", 8, expect="big"),
    Scenario("1 MiB upload c=8", "/cgi-bin/upload", 8, "POST", MIB, expect="length"),
    Scenario("hello.py c=16", "/cgi-bin/hello.py", 16),
    Scenario("hello.sh c=16", "/cgi-bin/hello.sh", 16),
)


# --------------------------------------------------------------------------
# the tree the servers serve


def compile_cgi(src: Path, dest: Path) -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise BenchError("no C compiler found (need cc or gcc)")
    base = [cc, "-O2", "-o", str(dest), str(src)]
    static = subprocess.run(base[:2] + ["-static"] + base[2:], check=False, capture_output=True, text=True)
    if static.returncode == 0:
        return "static"
    dynamic = subprocess.run(base, check=False, capture_output=True, text=True)
    if dynamic.returncode != 0:
        raise BenchError(f"compiling {src.name} failed:\n{dynamic.stderr}")
    return "dynamic"


def system_python() -> str:
    """The python3 the Python CGI runs under: the system's, which every user can run."""
    for candidate in ("/usr/bin/python3", shutil.which("python3")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError("no python3 for the Python CGI script")


def build_tree(tmp: Path) -> tuple[str, str]:
    """Compile and copy the CGIs; returns (how the C programs were linked, the Python CGI's interpreter)."""
    cgi = tmp / "cgi-bin"
    cgi.mkdir()
    kinds = {compile_cgi(CGI_SRC / f"{name}.c", cgi / name) for name in ("hello", "big", "upload")}
    shutil.copyfile(CGI_SRC / "hello.sh", cgi / "hello.sh")
    python = system_python()
    source = (CGI_SRC / "hello.py").read_text().split("\n", 1)[1]
    (cgi / "hello.py").write_text(f"#!{python}\n{source}")
    for entry in cgi.iterdir():
        entry.chmod(0o755)
    for sub in ("run", "logs", "wrk"):
        (tmp / sub).mkdir()
    # The servers drop to an unprivileged user: it must traverse and execute.
    for path in (tmp, cgi, tmp / "run", tmp / "logs"):
        path.chmod(0o755)
    return ("static" if kinds == {"static"} else "dynamic"), python


# --------------------------------------------------------------------------
# measuring


def preflight(srv: Server, scenarios: list[Scenario]) -> None:
    """Check each CGI once; a wrong answer disables that scenario for the server."""
    for sc in scenarios:
        if sc.path in srv.broken:
            continue
        body = os.urandom(sc.body_size) if sc.body_size else None
        try:
            status, data = http_request(srv.port, sc.method, sc.path, body, timeout=30)
            why = sc.check(status, data)
        except (OSError, http.client.HTTPException) as exc:
            why = f"{type(exc).__name__}: {exc}"
        if why:
            srv.broken[sc.path] = f"bad response: {why}"


def measure(srv: Server, sc: Scenario, duration: float, warmup: float, tmp: Path, use_wrk: bool) -> Result:
    if srv.error:
        return Result(error=srv.error)
    if sc.path in srv.broken:
        return Result(error=srv.broken[sc.path])
    if not srv.alive():
        srv.error = f"{srv.label} died:\n{srv.log_tail()}"
        return Result(error=one_line(srv.error))

    def once(secs: float) -> Result:
        if use_wrk:
            return run_wrk(srv.port, sc, secs, tmp)
        return run_python_client(srv.port, sc, secs)

    try:
        if warmup > 0:
            once(warmup)
        roots = srv.roots
        with PeakPss(roots) as pss:
            before = cpu_snapshot(roots, srv.role, srv.cgroup)
            busy, mine = machine_busy(), own_cpu()
            res = once(duration)
            busy, mine = machine_busy() - busy, own_cpu() - mine
            after = cpu_snapshot(roots, srv.role, srv.cgroup)
        res.pss_mib = pss.peak_mib
        used = cpu_between(before, after)
        # What else ran: the machine's busy time less the server's, the load
        # generator's and this script's. Only meaningful with the cgroup total.
        if srv.cgroup is not None:
            res.other_pct = max(0.0, busy - sum(used.values()) - mine) / (after.at - before.at) * 100
        if res.requests:
            res.cpu_us = {role: secs * 1e6 / res.requests for role, secs in used.items()}
            if srv.cgroup is None and not srv.reaps_scripts:
                del res.cpu_us["scripts"]  # unknown: nothing accounts for them
        return res
    except BenchError as exc:
        return Result(error=one_line(str(exc)))


def better(sc: Scenario, new: Result, old: Result) -> bool:
    if old.error or new.error:
        return bool(old.error) and not new.error
    return new.value(sc.unit) > old.value(sc.unit)


def progress(i: int, n: int, sc: Scenario, srv: Server, r: Result, best: tuple[str, float] | None,
             label: str = "") -> str:
    head = f"[{label + ' ' if label else ''}{i:>{len(str(n))}}/{n}] {sc.name:<25} {srv.label:<24}"
    if r.error:
        return f"{head} error: {r.error}"
    value = f"{r.value(sc.unit):,.0f} {sc.unit}" if sc.unit == "req/s" else f"{r.value(sc.unit):,.1f} {sc.unit}"
    cpu = "/".join(fmt(r.cpu_us.get(role), 0) for role in ("server", "daemon", "scripts"))
    vs = f"  {r.value(sc.unit) / best[1]:.2f}x best peer so far" if best and srv.kind != "peer" else ""
    kinds = " (" + ", ".join(f"{k} {v}" for k, v in r.error_kinds.items()) + ")" if r.error_kinds else ""
    other = f"  other load {r.other_pct:.0f}%" if r.other_pct is not None else ""
    return (f"{head} {value:>13}  p50 {fmt(r.p50_ms, 2)} p99 {fmt(r.p99_ms, 2)} ms  err {r.errors}{kinds}"
            f"  µs/req {cpu}  PSS {fmt(r.pss_mib, 1)} MiB{other}{vs}")


# --------------------------------------------------------------------------
# driver


def scenario_selected(name: str, only: str) -> bool:
    """Comma-separated terms; a term equal to a scenario's name matches only it,
    any other term matches every name containing it."""
    terms = [t.strip() for t in only.split(",") if t.strip()]
    if not terms:
        return True
    names = {sc.name for sc in SCENARIOS}
    return any(name == t if t in names else t in name for t in terms)


def _raise_interrupt(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=6.0, help="seconds per measurement (6)")
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load before each (1)")
    ap.add_argument("--pause", type=float, default=0.5, help="seconds of rest between measurements (0.5)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole matrix; each cell reports its best round (1)")
    ap.add_argument("--retries", type=int, default=2,
                    help="measure again, up to this many times, the cells during which other work used"
                         " more than --busy %% of a CPU (2)")
    ap.add_argument("--busy", type=float, default=25.0,
                    help="other load, in %% of one CPU, above which a cell is measured again (25)")
    ap.add_argument("--servers", default=",".join(SERVER_KEYS),
                    help=f"comma-separated subset of {','.join(SERVER_KEYS)}")
    ap.add_argument("--only", default="", help="comma-separated scenario names (or parts of names)")
    ap.add_argument("--smoke", action="store_true",
                    help="1 s per scenario against gunicorn-cgid gthread and gevent only, no files"
                         " written; exit status 1 when a server or a scenario fails")
    ap.add_argument("--python-client", action="store_true", help="do not use wrk even if installed")
    ap.add_argument("--out", type=Path, default=BENCH_DIR, help="where results.md and results.png go (bench/)")
    ap.add_argument("--no-write", action="store_true", help="print the table, write no files")
    ap.add_argument("--gunicorn-as-root", action="store_true",
                    help="when root, do not give gunicorn an unprivileged user")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temporary directory (configs, logs)")
    args = ap.parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.pause, args.no_write, args.retries = 1.0, 0.0, 0.0, True, 0
        if args.servers == ",".join(SERVER_KEYS):
            args.servers = "gthread,gevent"
    args.wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.wanted) - set(SERVER_KEYS)
    if unknown or not args.wanted:
        ap.error(f"unknown server(s): {', '.join(sorted(unknown)) or '(none)'}")
    if args.duration < 1 or args.rounds < 1 or args.retries < 0:
        ap.error("--duration and --rounds must be at least 1, --retries at least 0")
    args.scenarios = [s for s in SCENARIOS if scenario_selected(s.name, args.only)]
    if not args.scenarios:
        ap.error(f"no scenario matches {args.only!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    use_wrk = shutil.which("wrk") is not None and not args.python_client
    client = "wrk" if use_wrk else "python http.client"

    # Termination signals become KeyboardInterrupt so the finally block always
    # stops the servers (SIGHUP is left alone when ignored, as under nohup).
    stop_signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {sig: signal.getsignal(sig) for sig in stop_signals}
    for sig in stop_signals:
        if sig != signal.SIGHUP or saved[sig] != signal.SIG_IGN:
            signal.signal(sig, _raise_interrupt)

    load_at_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="gunicorn-cgid-bench-"))
    cgroups: Cgroups | None = None
    failed = False
    try:
        linked, python_cgi = build_tree(tmp)
        cgroups, cpu_method = Cgroups.create()
        if cgroups is None:
            cpu_method = f"children reaped by the servers' processes (no cgroup: {cpu_method})"
        user = unprivileged_user()
        env = gunicorn_env()
        notes: list[str] = []
        gunicorn_user = None
        if user is not None and not args.gunicorn_as_root:
            why = python_usable_by(user, tmp, env)
            if why is None:
                gunicorn_user = user
            else:
                print(f"warning: {user[0]} cannot use {sys.executable} ({why});"
                      " gunicorn runs as root", file=sys.stderr)
                notes.append(f"gunicorn (gunicorn-cgid and the trivial app) ran as root, and so did"
                             f" gunicorn-cgid's scripts (with `cgi_allow_root = True` where gunicorn-cgid"
                             f" has it): user {user[0]} cannot use {sys.executable} ({why})."
                             f" The peers ran their scripts as {user[0]}.")
        elif user is not None:
            notes.append("gunicorn ran as root (--gunicorn-as-root).")
        ctx = Context(tmp, user, gunicorn_user, cgroups, gunicorn_settings(env))
        h1c = h1c_version(env)
        servers, skipped = make_servers(ctx, args.wanted, h1c)
        for line in skipped:
            print(line, file=sys.stderr)
        notes += skipped
        for srv in servers:
            try:
                srv.start()
            except BenchError as exc:
                srv.error = one_line(str(exc))
                print(f"{srv.label}: {exc}", file=sys.stderr)
        deadline = time.monotonic() + READY_TIMEOUT
        for srv in servers:
            if srv.error:
                continue
            try:
                srv.wait_ready(deadline)
                preflight(srv, args.scenarios)
                for path, why in srv.broken.items():
                    print(f"{srv.label}: {path}: {why}", file=sys.stderr)
            except BenchError as exc:
                srv.error = one_line(str(exc))
                print(f"{srv.label}: {exc}", file=sys.stderr)
        if not servers or all(s.error for s in servers):
            raise BenchError("no server came up")
        for srv in servers:
            if isinstance(srv, GunicornCgid) and not srv.error:
                notes.append(f"{srv.label}: script containment {srv.containment()}.")
                break

        n = len(args.scenarios) * len(servers) * args.rounds
        print(f"# {client}, {args.duration:g}s per measurement after {args.warmup:g}s warm-up,"
              f" {n} measurements; CPU of scripts from {cpu_method}", file=sys.stderr, flush=True)
        cells: dict[tuple[str, str], Result] = {}
        first_pss: dict[tuple[str, str], float | None] = {}
        retried = 0

        def run_pass(wanted: set[tuple[str, str]] | None, label: str) -> None:
            """Measure every (scenario, server), or those in ``wanted``, scenario by scenario."""
            todo = [(sc, srv) for sc in args.scenarios for srv in servers
                    if wanted is None or (sc.name, srv.key) in wanted]
            for i, (sc, srv) in enumerate(todo, 1):
                res = measure(srv, sc, args.duration, args.warmup, tmp, use_wrk)
                key = (sc.name, srv.key)
                first_pss.setdefault(key, res.pss_mib)
                # Other work on the machine only ever slows a server down: keep its best run.
                if key not in cells or better(sc, res, cells[key]):
                    cells[key] = res
                print(progress(i, len(todo), sc, srv, res, best_peer(sc, servers, cells), label),
                      file=sys.stderr, flush=True)
                if args.pause:
                    time.sleep(args.pause)

        for rnd in range(args.rounds):
            run_pass(None, f"round {rnd + 1}" if args.rounds > 1 else "")
        for attempt in range(args.retries):
            busy = {key for key, r in cells.items()
                    if r.other_pct is not None and r.other_pct > args.busy and not r.error}
            if not busy:
                break
            print(f"# {len(busy)} measurement(s) had more than {args.busy:g}% of a CPU of other load:"
                  " measuring them again", file=sys.stderr, flush=True)
            retried += len(busy)
            run_pass(busy, f"retry {attempt + 1}")

        # Memory from the first round: later rounds inherit what the 1 MiB
        # scenarios left in the servers' heaps.
        for key, res in cells.items():
            res.pss_mib = first_pss[key]

        facts = machine(h1c, client)
        facts[-1] += "."
        facts[0] += f", load average {load_at_start:.1f} at start."
        facts.append(
            f"Load from {client} (one thread), {args.duration:g} s per measurement after {args.warmup:g} s of"
            f" warm-up, scenarios interleaved (each against every server in turn)"
            + (f", {args.rounds} rounds" if args.rounds > 1 else "")
            + (f", {retried} measurement(s) repeated because other work used more than {args.busy:g}% of a"
               " CPU meanwhile" if retried else "")
            + (", each cell's best run shown (peak PSS: its first run's)" if args.rounds > 1 or retried else "")
            + f". C CGIs linked {linked};"
            f" the Python CGI runs {python_cgi}. CPU of scripts from {cpu_method}."
        )
        notes.append(
            "Scripts ran as: " + ", ".join(f"{s.label} {s.runs_as}" for s in servers if s.runs_as) + "."
        )
        chart = None
        if not args.no_write:
            args.out.mkdir(parents=True, exist_ok=True)
            chart = write_chart(args.out / "results.png", args.scenarios, servers, cells)
        text = markdown(args.scenarios, servers, cells, facts, notes, chart)
        print(text)
        if not args.no_write:
            (args.out / "results.md").write_text(text)
            print(f"wrote {args.out / 'results.md'}" + (f" and {args.out / chart}" if chart else ""),
                  file=sys.stderr)
        # The smoke run fails when a server or a cell could not be measured, or
        # when more than 5 % of a cell's requests failed.
        failed = any(s.error for s in servers) or any(
            r.error or not r.requests or r.errors * 20 > r.requests for r in cells.values())
        return 1 if args.smoke and failed else 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted, stopping servers", file=sys.stderr)
        return 130
    finally:
        for sig in stop_signals:  # cleanup must not be cut short
            signal.signal(sig, signal.SIG_IGN)
        for line in stop_all():
            print(f"warning: {line}", file=sys.stderr)
        if cgroups is not None:
            left = cgroups.leftovers()
            if left:
                print(f"warning: killing {len(left)} process(es) left in the bench's cgroups", file=sys.stderr)
            cgroups.remove()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        if args.keep_tmp:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
