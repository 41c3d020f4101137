"""The report: the machine and versions, the Markdown tables, the PNG chart."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from load import Result, Scenario

Cell = dict[tuple[str, str], Result]  # (scenario name, server key) -> result


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _run(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None and not os.access(argv[0], os.X_OK):
        return ""
    try:
        done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return (done.stdout + done.stderr).strip()


def _first(pattern: str, text: str) -> str | None:
    m = re.search(pattern, text)
    return m.group(1) if m else None


def _module_version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return None


def source_state() -> str | None:
    """The commit gunicorn-cgid was measured at, and whether its package had local changes."""
    from servers import REPO_ROOT
    head = _run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    if not head or " " in head:
        return None
    dirty = _run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "gunicorn_cgid"])
    return f"commit {head}" + (" with uncommitted changes" if dirty else "")


def machine(h1c: str | None, client: str) -> list[str]:
    """One line per fact: the machine, then every program's version."""
    cpu = "unknown CPU"
    try:
        cpu = _first(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text()) or cpu
    except OSError:
        pass
    mem = ""
    try:
        kib = int(_first(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()) or 0)
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, ValueError):
        pass
    distro = ""
    try:
        distro = _first(r'PRETTY_NAME="([^"]+)"', Path("/etc/os-release").read_text()) or ""
    except OSError:
        pass
    from servers import APACHE_BIN, FCGIWRAP_BIN, LIGHTTPD_BIN, NGINX_BIN
    source = source_state()
    source = f"({source})" if source else None
    versions = [
        ("Apache", _first(r"Apache/(\S+)", _run([APACHE_BIN, "-v"]))),
        ("nginx", _first(r"nginx/(\S+)", _run([NGINX_BIN, "-v"]))),
        ("fcgiwrap", _first(r"fcgiwrap version (\S+)", _run([FCGIWRAP_BIN, "-h"]))),
        ("lighttpd", _first(r"lighttpd/(\S+)", _run([LIGHTTPD_BIN, "-v"]))),
        ("wrk", _first(r"wrk (\S+)", _run(["wrk", "-v"])) if client == "wrk" else None),
        ("gunicorn-cgid", " ".join(filter(None, [_module_version("gunicorn-cgid"), source]))),
        ("Python", platform.python_version()),
        ("gunicorn", _module_version("gunicorn")),
        ("gevent", _module_version("gevent")),
        ("gunicorn-h1c", h1c),
    ]
    return [
        f"{os.cpu_count()} CPUs ({cpu}){mem}, Linux {platform.release()}" + (f", {distro}" if distro else ""),
        ", ".join(f"{name} {v}" for name, v in versions if v),
    ]


def best_peer(sc: Scenario, servers, cells: Cell) -> tuple[str, float] | None:
    best = None
    for srv in servers:
        r = cells.get((sc.name, srv.key))
        if srv.kind == "peer" and r is not None and not r.error and r.requests:
            v = r.value(sc.unit)
            if best is None or v > best[1]:
                best = (srv.label, v)
    return best


def ratio(sc: Scenario, r: Result | None, best: tuple[str, float] | None) -> float | None:
    if r is None or r.error or best is None or best[1] <= 0:
        return None
    return r.value(sc.unit) / best[1]


def summary_table(scenarios: list[Scenario], servers, cells: Cell) -> str:
    """Per scenario: every server's req/s (or MiB/s) with its ratio to the best peer."""
    head = "| scenario | unit | " + " | ".join(s.label for s in servers) + " | best peer |"
    out = [head, "|---|---|" + "---:|" * len(servers) + "---|"]
    for sc in scenarios:
        best = best_peer(sc, servers, cells)
        row = []
        for srv in servers:
            r = cells.get((sc.name, srv.key))
            if r is None or r.error:
                row.append("error" if r is not None else "")
                continue
            q = ratio(sc, r, best)
            v = fmt(r.value(sc.unit), 0)
            row.append(f"{v} ({q:.2f})" if q is not None else v)
        out.append(f"| {sc.name} | {sc.unit} | " + " | ".join(row) + f" | {best[0] if best else '-'} |")
    return "\n".join(out)


def cpu_cells(srv, r: Result) -> list[float | None]:
    """server, daemon, scripts µs/req; None where the role does not exist or is unknown."""
    cpu = [r.cpu_us.get(role) for role in ("server", "daemon", "scripts")]
    if srv.kind == "ceiling" or srv.key == "lighttpd":
        cpu[1] = None  # no separate process spawns the scripts
    if srv.kind == "ceiling":
        cpu[2] = None  # and there are none
    return cpu


def total_cpu(r: Result) -> float | None:
    if "server" not in r.cpu_us or "scripts" not in r.cpu_us:
        return None
    return sum(r.cpu_us.values())


def ceiling_table(scenarios: list[Scenario], servers, cells: Cell) -> str | None:
    """gunicorn-cgid's CPU per request by role, its workers against the trivial app's."""
    ceilings = {s.key: s for s in servers if s.kind == "ceiling"}
    ours = [s for s in servers if s.kind == "ours"]
    if "trivial" not in ceilings or not ours:
        return None
    out = [
        "| scenario | server | workers µs/req | trivial app's workers µs/req | ratio | supervisor + daemon µs/req"
        " | scripts µs/req | total µs/req | best peer's total µs/req |",
        "|---|---|" + "---:|" * 7,
    ]
    for sc in scenarios:
        best = best_peer(sc, servers, cells)
        peer = next((s for s in servers if best and s.label == best[0]), None)
        peer_total = total_cpu(cells[(sc.name, peer.key)]) if peer else None
        for srv in ours:
            r = cells.get((sc.name, srv.key))
            if r is None or r.error or not r.cpu_us:
                continue
            # Against the trivial app with the same HTTP parser, when it ran.
            same = "trivial-h1c" if srv.key.endswith("-h1c") and "trivial-h1c" in ceilings else "trivial"
            base = cells.get((sc.name, same))
            w = r.cpu_us["server"]
            b = base.cpu_us.get("server") if base is not None and not base.error else None
            out.append(
                f"| {sc.name} | {srv.label} | {fmt(w, 0)} | {fmt(b, 0)} | {fmt(w / b if b else None, 1)} | "
                f"{fmt(r.cpu_us.get('daemon'), 0)} | {fmt(r.cpu_us.get('scripts'), 0)} | {fmt(total_cpu(r), 0)} | "
                f"{fmt(peer_total, 0)} |"
            )
    return "\n".join(out)


def full_table(scenarios: list[Scenario], servers, cells: Cell) -> str:
    out = [
        "| scenario | server | req/s | MiB/s | p50 ms | p99 ms | errors | vs best peer"
        " | server µs/req | CGI daemon µs/req | scripts µs/req | total µs/req | peak PSS MiB | other load % |",
        "|---|---|" + "---:|" * 12,
    ]
    for sc in scenarios:
        best = best_peer(sc, servers, cells)
        for srv in servers:
            r = cells.get((sc.name, srv.key))
            if r is None:
                continue
            if r.error:
                msg = (r.error if len(r.error) <= 160 else r.error[:157] + "...").replace("|", "\\|")
                out.append(f"| {sc.name} | {srv.label} | error: {msg} |" + " |" * 11)
                continue
            q = ratio(sc, r, best)
            cpu = cpu_cells(srv, r)
            total = total_cpu(r) if srv.kind != "ceiling" else cpu[0]
            out.append(
                f"| {sc.name} | {srv.label} | {fmt(r.rps, 0)} | {fmt(r.mibps, 1)} | {fmt(r.p50_ms, 2)} | "
                f"{fmt(r.p99_ms, 2)} | {r.errors} | {fmt(q, 2)} | {fmt(cpu[0], 0)} | {fmt(cpu[1], 0)} | "
                f"{fmt(cpu[2], 0)} | {fmt(total, 0)} | {fmt(r.pss_mib, 1)} | {fmt(r.other_pct, 0)} |"
            )
    return "\n".join(out)


def markdown(scenarios: list[Scenario], servers, cells: Cell, facts: list[str], notes: list[str],
             chart: str | None) -> str:
    parts = [
        "# gunicorn-cgid vs Apache mod_cgid, nginx + fcgiwrap and lighttpd mod_cgi",
        "",
        f"`python bench/run.py`, {time.strftime('%Y-%m-%d')}. " + " ".join(facts),
        "",
        "## Throughput, and ratio to the best peer",
        "",
        "Each cell: req/s (MiB/s for the 1 MiB scenarios), and in brackets the ratio to the best of"
        " Apache, nginx + fcgiwrap and lighttpd in the same scenario. The trivial WSGI app is no CGI"
        " at all: it is the ceiling of a gunicorn worker, not a peer.",
        "",
        summary_table(scenarios, servers, cells),
        "",
    ]
    if chart:
        parts += [f"![ratio to the best peer]({chart})", ""]
    ceiling = ceiling_table(scenarios, servers, cells)
    if ceiling:
        parts += [
            "## gunicorn-cgid's CPU per request, against the ceiling",
            "",
            "*workers*: gunicorn's master and workers (the master's share is a few µs); the trivial app's"
            " workers run the same gunicorn settings (and HTTP parser) with no CGI, so the ratio is what the"
            " CGI path adds in the worker. *best peer's total*: all CPU per request of the best peer in the scenario.",
            "",
            ceiling,
            "",
        ]
    parts += [
        "## Every measurement",
        "",
        "CPU per request by role: *server* is the processes that speak HTTP (gunicorn's master and"
        " workers; Apache's parent and event-MPM children; nginx's master and workers; lighttpd),"
        " *CGI daemon* the long-lived processes that start scripts (gunicorn-cgid's supervisor and"
        " daemon; Apache's mod_cgid daemon; the fcgiwrap processes), *scripts* the processes born"
        " during the measurement (the CGI programs). Peak PSS: the server's whole process tree,"
        " scripts included, sampled every 0.5 s under load. *other load*: CPU the rest of the machine"
        " used meanwhile (not this server, the load generator or the harness), in % of one CPU,"
        " hypervisor steal included: a cell with a high one was slowed down by something else.",
        "",
        full_table(scenarios, servers, cells),
        "",
    ]
    parts += [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"


def write_chart(path: Path, scenarios: list[Scenario], servers, cells: Cell) -> str | None:
    """Grouped bars of every server's ratio to the best peer; None when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart (pip install matplotlib)", file=sys.stderr)
        return None
    shown = [s for s in servers if s.kind != "ceiling"]
    fig, ax = plt.subplots(figsize=(15, 5.5))
    width = 0.8 / max(1, len(shown))
    for i, srv in enumerate(shown):
        ys = []
        for sc in scenarios:
            q = ratio(sc, cells.get((sc.name, srv.key)), best_peer(sc, servers, cells))
            ys.append(q if q is not None else 0.0)
        xs = [j + (i - (len(shown) - 1) / 2) * width for j in range(len(scenarios))]
        hatch = None if srv.kind == "ours" else "//"
        ax.bar(xs, ys, width, label=srv.label, hatch=hatch, edgecolor="white" if hatch else None)
    ax.axhline(1.0, color="black", linewidth=1)
    ax.set_xlim(-0.6, len(scenarios) - 0.4)
    ax.set_xticks(range(len(scenarios)))
    ax.set_xticklabels([sc.name for sc in scenarios], rotation=20, ha="right")
    ax.set_ylabel("throughput / best peer's")
    ax.set_title("gunicorn-cgid and its peers, relative to the best peer in each scenario")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
