"""The servers under test: Apache mod_cgid, nginx + fcgiwrap, lighttpd mod_cgi,
gunicorn-cgid (gthread, gevent, gthread with the C HTTP parser) and plain
gunicorn with a trivial WSGI app. Each gets a generated configuration in the
run's temporary directory, a free loopback port and, where possible, a cgroup.
"""

from __future__ import annotations

import grp
import http.client
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from load import http_request
from procs import BenchError, Cgroup, Cgroups, Managed, Proc, cmdline, one_line, process_table

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
APACHE_BIN = os.environ.get("APACHE2", "/usr/sbin/apache2")
APACHE_MODULE_DIRS = ("/usr/lib/apache2/modules", "/usr/lib64/httpd/modules", "/usr/libexec/apache2")
APACHE_MODULES = (
    ("mpm_event_module", "mod_mpm_event.so"),
    ("authz_core_module", "mod_authz_core.so"),
    ("mime_module", "mod_mime.so"),
    ("alias_module", "mod_alias.so"),
    ("cgid_module", "mod_cgid.so"),
    ("unixd_module", "mod_unixd.so"),
)
NGINX_BIN = os.environ.get("NGINX", "/usr/sbin/nginx")
FCGIWRAP_BIN = os.environ.get("FCGIWRAP", "/usr/sbin/fcgiwrap")
LIGHTTPD_BIN = os.environ.get("LIGHTTPD", "/usr/sbin/lighttpd")
GUNICORN_WORKERS = 2
GTHREAD_THREADS = 32
FCGIWRAP_CHILDREN = 16
READY_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Context:
    """What every server shares: the tree it serves and the users it runs as."""
    tmp: Path
    user: tuple[str, int, int] | None  # (name, uid, gid) the peers' scripts run as; None when not root
    gunicorn_user: tuple[str, int, int] | None  # the same for gunicorn, None when it runs as us
    cgroups: Cgroups | None
    gunicorn_settings: set[str] = field(default_factory=set)

    @property
    def logs(self) -> Path:
        return self.tmp / "logs"


def unprivileged_user() -> tuple[str, int, int] | None:
    if os.geteuid() != 0:
        return None
    for name in ("www-data", "nobody", "daemon"):
        try:
            pw = pwd.getpwnam(name)
        except KeyError:
            continue
        return pw.pw_name, pw.pw_uid, pw.pw_gid
    raise BenchError("running as root but found no unprivileged user (www-data, nobody)")


def group_name(gid: int) -> str:
    return grp.getgrgid(gid).gr_name


def chown(path: Path, user: tuple[str, int, int] | None) -> None:
    if user is not None:
        os.chown(path, user[1], user[2])


class Server:
    key = ""
    label = ""
    kind = "peer"  # "peer", "ours" or "ceiling"
    install_hint = ""
    reaps_scripts = True  # False: its scripts' CPU shows in no process's cutime (SIGCHLD ignored)

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.port = free_port()
        self.managed: list[Managed] = []
        self.cgroup: Cgroup | None = None
        self.error: str | None = None
        self.broken: dict[str, str] = {}  # scenario path -> why
        self.runs_as = ""

    # what subclasses provide
    def missing(self) -> str | None:
        """Why this server cannot run here (not installed...), or None."""
        return None

    def start(self) -> None:
        raise NotImplementedError

    def role(self, proc: Proc, root: int, table: dict[int, Proc]) -> str:
        return "server"

    def ready_extra(self) -> bool:
        return True

    # shared
    @property
    def roots(self) -> list[int]:
        return [m.pid for m in self.managed]

    def spawn(self, name: str, argv: list[str], run_as: tuple[str, int, int] | None = None, **kw) -> Managed:
        if self.cgroup is None and self.ctx.cgroups is not None:
            self.cgroup = self.ctx.cgroups.child(self.key)
        m = Managed(name, argv, self.ctx.logs / f"{self.key}-{len(self.managed)}.out",
                    cgroup=self.cgroup, run_as=run_as, **kw)
        self.managed.append(m)
        return m

    def alive(self) -> bool:
        return all(m.alive() for m in self.managed)

    def log_tail(self) -> str:
        return "\n".join(m.log_tail() for m in self.managed)

    def wait_ready(self, deadline: float) -> None:
        """TCP connect, then GET of the hello CGI answering 200 hello, then ready_extra()."""
        last = "no attempt"
        while True:
            dead = next((m for m in self.managed if not m.alive()), None)
            if dead is not None:
                raise BenchError(f"{dead.name} exited with status {dead.proc.returncode}"
                                 f" before it was ready:\n{self.log_tail()}")
            try:
                status, body = http_request(self.port, "GET", "/cgi-bin/hello", timeout=5.0)
                if status == 200 and body == b"hello\n":
                    if self.ready_extra():
                        return
                    last = "workers not all up"
                else:
                    last = f"HTTP {status}: {body[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise BenchError(f"{self.label} not ready after {READY_TIMEOUT:.0f}s ({last})\n{self.log_tail()}")
            time.sleep(0.1)


# --------------------------------------------------------------------------
# Apache httpd, event MPM, mod_cgid


class Apache(Server):
    key = "apache"
    label = "Apache mod_cgid"
    install_hint = "apt-get install apache2"
    reaps_scripts = False  # mod_cgid's daemon sets SIGCHLD to SIG_IGN

    def missing(self) -> str | None:
        if not os.access(APACHE_BIN, os.X_OK):
            return f"{APACHE_BIN} not found"
        return None

    def config(self) -> Path:
        tmp = self.ctx.tmp
        moddir = next((d for d in APACHE_MODULE_DIRS if Path(d).is_dir()), None)
        if moddir is None:
            raise BenchError(f"no Apache module directory among {APACHE_MODULE_DIRS}")
        builtin = set(subprocess.run([APACHE_BIN, "-l"], check=False, capture_output=True,
                                     text=True).stdout.split())
        load = []
        for ident, so in APACHE_MODULES:
            if so.replace(".so", ".c") in builtin:
                continue
            if not (Path(moddir) / so).exists():
                raise BenchError(f"Apache module {so} not found in {moddir}")
            load.append(f"LoadModule {ident} {moddir}/{so}")
        adir = tmp / "apache"
        adir.mkdir()
        ids = []
        if self.ctx.user is not None:
            ids = [f"User {self.ctx.user[0]}", f"Group {group_name(self.ctx.user[2])}"]
        mime_types = Path("/etc/mime.types")
        if not mime_types.exists():
            mime_types = adir / "mime.types"
            mime_types.write_text("text/plain txt\n")
        conf = adir / "httpd.conf"
        conf.write_text("\n".join([
            f'ServerRoot "{adir}"',
            f'DefaultRuntimeDir "{adir}"',
            f'PidFile "{adir}/httpd.pid"',
            f'ErrorLog "{self.ctx.logs}/apache-error.log"',
            "LogLevel warn",
            *load,
            *ids,
            "ServerName 127.0.0.1",
            f"Listen 127.0.0.1:{self.port}",
            f'TypesConfig "{mime_types}"',
            f'ScriptSock "{adir}/cgisock"',
            "KeepAlive On",
            "MaxKeepAliveRequests 0",
            "KeepAliveTimeout 5",
            "Timeout 60",
            # Two processes, as gunicorn's two workers; a thread per connection of the busiest scenario.
            "StartServers 2",
            "ServerLimit 2",
            "ThreadLimit 128",
            "ThreadsPerChild 128",
            "MaxRequestWorkers 256",
            "MinSpareThreads 128",
            "MaxSpareThreads 256",
            "MaxConnectionsPerChild 0",
            f'DocumentRoot "{adir}"',
            "<Directory />",
            "    AllowOverride None",
            "    Require all denied",
            "</Directory>",
            f'ScriptAlias /cgi-bin/ "{tmp}/cgi-bin/"',
            f'<Directory "{tmp}/cgi-bin">',
            "    AllowOverride None",
            "    Options None",
            "    Require all granted",
            "</Directory>",
            "",
        ]))
        return conf

    def start(self) -> None:
        conf = self.config()
        check = subprocess.run([APACHE_BIN, "-t", "-f", str(conf)], check=False, capture_output=True, text=True)
        if check.returncode != 0:
            raise BenchError(f"Apache rejected its generated config:\n{check.stderr}")
        self.spawn("apache", [APACHE_BIN, "-f", str(conf), "-DFOREGROUND"])
        self.runs_as = self.ctx.user[0] if self.ctx.user else "the current user"

    def role(self, proc: Proc, root: int, table: dict[int, Proc]) -> str:
        # The parent and the event MPM's (threaded) children serve HTTP; the
        # single-threaded child is mod_cgid's daemon, which forks the scripts.
        if proc.pid == root or proc.threads > 1:
            return "server"
        return "daemon"


# --------------------------------------------------------------------------
# nginx + fcgiwrap


FASTCGI_PARAMS = """\
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param SCRIPT_NAME $fastcgi_script_name;
            fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;
            fastcgi_param REQUEST_URI $request_uri;
            fastcgi_param DOCUMENT_URI $document_uri;
            fastcgi_param DOCUMENT_ROOT $document_root;
            fastcgi_param SERVER_PROTOCOL $server_protocol;
            fastcgi_param REQUEST_SCHEME $scheme;
            fastcgi_param GATEWAY_INTERFACE CGI/1.1;
            fastcgi_param SERVER_SOFTWARE nginx/$nginx_version;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param REMOTE_PORT $remote_port;
            fastcgi_param SERVER_ADDR $server_addr;
            fastcgi_param SERVER_PORT $server_port;
            fastcgi_param SERVER_NAME $server_name;
"""


class Nginx(Server):
    key = "nginx"
    label = "nginx + fcgiwrap"
    install_hint = "apt-get install nginx fcgiwrap"

    def missing(self) -> str | None:
        absent = [b for b in (NGINX_BIN, FCGIWRAP_BIN) if not os.access(b, os.X_OK)]
        return f"{' and '.join(absent)} not found" if absent else None

    def start(self) -> None:
        ndir = self.ctx.tmp / "nginx"
        ndir.mkdir()
        wrapdir = self.ctx.tmp / "fcgiwrap"
        wrapdir.mkdir(mode=0o755)
        chown(wrapdir, self.ctx.user)
        sock = wrapdir / "fcgiwrap.sock"
        user_line = ""
        if self.ctx.user is not None:
            user_line = f"user {self.ctx.user[0]} {group_name(self.ctx.user[2])};"
        conf = ndir / "nginx.conf"
        conf.write_text(f"""\
daemon off;
master_process on;
worker_processes {GUNICORN_WORKERS};
{user_line}
pid {ndir}/nginx.pid;
error_log {self.ctx.logs}/nginx-error.log error;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    default_type text/plain;
    client_body_temp_path {ndir}/client_body;
    fastcgi_temp_path {ndir}/fastcgi;
    proxy_temp_path {ndir}/proxy;
    uwsgi_temp_path {ndir}/uwsgi;
    scgi_temp_path {ndir}/scgi;
    keepalive_requests 1000000;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{self.port};
        server_name 127.0.0.1;
        location /cgi-bin/ {{
            root {self.ctx.tmp};
            fastcgi_pass unix:{sock};
{FASTCGI_PARAMS}        }}
    }}
}}
""")
        # fcgiwrap first, as the scripts' user, so nginx finds its socket.
        self.fcgiwrap = self.spawn("fcgiwrap", [FCGIWRAP_BIN, "-c", str(FCGIWRAP_CHILDREN),
                                                "-s", f"unix:{sock}"], run_as=self.ctx.user)
        deadline = time.monotonic() + 10
        while not sock.exists():
            if not self.fcgiwrap.alive() or time.monotonic() > deadline:
                raise BenchError(f"fcgiwrap did not create {sock}:\n{self.fcgiwrap.log_tail()}")
            time.sleep(0.05)
        check = subprocess.run([NGINX_BIN, "-t", "-p", f"{ndir}/", "-e", f"{self.ctx.logs}/nginx-error.log",
                                "-c", str(conf)], check=False, capture_output=True, text=True)
        if check.returncode != 0:
            raise BenchError(f"nginx rejected its generated config:\n{check.stderr}")
        self.spawn("nginx", [NGINX_BIN, "-p", f"{ndir}/", "-e", f"{self.ctx.logs}/nginx-error.log", "-c", str(conf)])
        self.runs_as = self.ctx.user[0] if self.ctx.user else "the current user"

    def role(self, proc: Proc, root: int, table: dict[int, Proc]) -> str:
        return "daemon" if root == self.fcgiwrap.pid else "server"


# --------------------------------------------------------------------------
# lighttpd mod_cgi


class Lighttpd(Server):
    key = "lighttpd"
    label = "lighttpd mod_cgi"
    install_hint = "apt-get install lighttpd"

    def missing(self) -> str | None:
        return None if os.access(LIGHTTPD_BIN, os.X_OK) else f"{LIGHTTPD_BIN} not found"

    def start(self) -> None:
        ldir = self.ctx.tmp / "lighttpd"
        (ldir / "www").mkdir(parents=True)
        for sub in ("upload", "log"):  # written after lighttpd drops to the user
            (ldir / sub).mkdir()
            chown(ldir / sub, self.ctx.user)
        ids = ""
        if self.ctx.user is not None:
            ids = f'server.username = "{self.ctx.user[0]}"\nserver.groupname = "{group_name(self.ctx.user[2])}"\n'
        conf = ldir / "lighttpd.conf"
        conf.write_text(f"""\
server.modules = ("mod_alias", "mod_cgi")
server.document-root = "{ldir}/www"
server.bind = "127.0.0.1"
server.port = {self.port}
{ids}server.pid-file = "{ldir}/lighttpd.pid"
server.errorlog = "{ldir}/log/error.log"
server.upload-dirs = ("{ldir}/upload")
server.max-keep-alive-requests = 1000000
alias.url = ("/cgi-bin/" => "{self.ctx.tmp}/cgi-bin/")
$HTTP["url"] =~ "^/cgi-bin/" {{
    cgi.assign = ("" => "")
}}
""")
        check = subprocess.run([LIGHTTPD_BIN, "-tt", "-f", str(conf)], check=False, capture_output=True, text=True)
        if check.returncode != 0:
            raise BenchError(f"lighttpd rejected its generated config:\n{check.stderr}{check.stdout}")
        self.spawn("lighttpd", [LIGHTTPD_BIN, "-D", "-f", str(conf)])
        self.runs_as = self.ctx.user[0] if self.ctx.user else "the current user"


# --------------------------------------------------------------------------
# gunicorn: gunicorn-cgid and the trivial app


def gunicorn_argv() -> list[str]:
    """The stock ``gunicorn`` command of this Python's environment."""
    script = Path(sys.executable).with_name("gunicorn")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gunicorn"]


def gunicorn_settings(env: dict[str, str]) -> set[str]:
    """Names of the settings gunicorn takes, gunicorn-cgid's included, as the servers will import them."""
    probe = ("import gunicorn_cgid.settings\nfrom gunicorn.config import Config\n"
             "print(' '.join(Config().settings))")
    done = subprocess.run([sys.executable, "-c", probe], env=env, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"cannot import gunicorn_cgid.settings:\n{done.stderr}")
    return set(done.stdout.split())


def python_usable_by(user: tuple[str, int, int], tmp: Path, env: dict[str, str]) -> str | None:
    """None when ``user`` can run this Python and import what the servers
    import lazily, else why not (e.g. a Python installed under /root)."""
    probe = "import resource, gunicorn.workers.gthread, gunicorn_cgid.worker.app"
    if importlib.util.find_spec("gevent") is not None:
        probe += ", gevent"
    try:
        done = subprocess.run(
            [sys.executable, "-c", probe], user=user[1], group=user[2], extra_groups=[],
            cwd=str(tmp), env=env, check=False, capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if done.returncode != 0:
        return one_line(done.stderr) or f"exit status {done.returncode}"
    return None


def gunicorn_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def h1c_version(env: dict[str, str]) -> str | None:
    """Version of gunicorn_h1c as the servers would import it, or None."""
    done = subprocess.run(
        [sys.executable, "-c", "import gunicorn_h1c, importlib.metadata as m; print(m.version('gunicorn-h1c'))"],
        env=env, check=False, capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


class Gunicorn(Server):
    """A gunicorn master with GUNICORN_WORKERS workers; subclasses give the app."""
    worker = "gthread"
    http_parser = "python"
    app = ""

    def extra_config(self) -> list[str]:
        return []

    def config(self) -> Path:
        ctx = self.ctx
        settings = ctx.gunicorn_settings
        lines = [
            *self.extra_config(),
            f"bind = {f'127.0.0.1:{self.port}'!r}",
            f"chdir = {str(ctx.tmp)!r}",
            f"workers = {GUNICORN_WORKERS}",
            f"worker_class = {self.worker!r}",
            f"errorlog = {str(ctx.logs / f'{self.key}-error.log')!r}",
            'loglevel = "warning"',
            "timeout = 60",
            "graceful_timeout = 5",
        ]
        if self.worker == "gthread":
            lines.append(f"threads = {GTHREAD_THREADS}")
        if "http_parser" in settings:
            # Explicit, so that an installed gunicorn-h1c does not change the other columns.
            lines.append(f"http_parser = {self.http_parser!r}")
        if "control_socket_disable" in settings:
            lines.append("control_socket_disable = True")
        if ctx.gunicorn_user is not None:
            # Like Apache's User/Group: workers (and CGI scripts) run unprivileged.
            lines += [f"user = {ctx.gunicorn_user[0]!r}", f"group = {group_name(ctx.gunicorn_user[2])!r}"]
        conf = ctx.tmp / f"{self.key}.conf.py"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self) -> None:
        conf = self.config()
        self.master = self.spawn(self.key, [*gunicorn_argv(), "-c", str(conf), self.app],
                                 env=gunicorn_env(), cwd=str(self.ctx.tmp))
        if self.ctx.gunicorn_user is not None:
            self.runs_as = self.ctx.gunicorn_user[0]
        else:
            self.runs_as = "root" if os.geteuid() == 0 else "the current user"

    def workers(self) -> list[int]:
        table = process_table()
        return [p.pid for p in table.values()
                if p.ppid == self.master.pid and b"gunicorn_cgid.daemon" not in cmdline(p.pid)]

    def ready_extra(self) -> bool:
        return len(self.workers()) >= GUNICORN_WORKERS


class GunicornCgid(Gunicorn):
    kind = "ours"
    app = "gunicorn_cgid:app"

    def __init__(self, ctx: Context, worker: str, h1c: bool = False) -> None:
        super().__init__(ctx)
        self.worker = worker
        self.key = f"{worker}-h1c" if h1c else worker
        self.label = f"gunicorn-cgid {worker}" + (" + h1c" if h1c else "")
        self.http_parser = "fast" if h1c else "python"

    def extra_config(self) -> list[str]:
        lines = [
            "from gunicorn_cgid.hooks import *  # noqa: F401,F403",
            f"script_sock = {str(self.ctx.tmp / 'run' / 'cgisock')!r}",
            'script_alias = {"/cgi-bin/": "cgi-bin/"}',
        ]
        if self.ctx.gunicorn_user is None and os.geteuid() == 0 and "cgi_allow_root" in self.ctx.gunicorn_settings:
            lines.append("cgi_allow_root = True  # gunicorn could not be given an unprivileged user")
        return lines

    def role(self, proc: Proc, root: int, table: dict[int, Proc]) -> str:
        # The supervisor and the daemon it forks run ``python -m gunicorn_cgid.daemon``.
        return "daemon" if b"gunicorn_cgid.daemon" in cmdline(proc.pid) else "server"

    def containment(self) -> str:
        """How the daemon contains scripts: cgroup v2 when it sits in a gunicorn-cgid cgroup."""
        table = process_table()
        for p in table.values():
            if p.ppid == self.master.pid and b"gunicorn_cgid.daemon" in cmdline(p.pid):
                for d in table.values():
                    if d.ppid == p.pid:
                        try:
                            text = Path(f"/proc/{d.pid}/cgroup").read_text()
                        except OSError:
                            continue
                        return "cgroup v2" if "/gunicorn-cgid." in text else "process groups"
        return "unknown"


class TrivialGunicorn(Gunicorn):
    """Plain gunicorn, same worker settings, answering from Python: the ceiling
    of what a gunicorn worker can do per request."""
    kind = "ceiling"
    app = "trivial_app:app"

    def __init__(self, ctx: Context, h1c: bool = False) -> None:
        super().__init__(ctx)
        self.key = "trivial-h1c" if h1c else "trivial"
        self.label = "gunicorn trivial WSGI" + (" + h1c" if h1c else "")
        self.http_parser = "fast" if h1c else "python"

    def start(self) -> None:
        shutil.copyfile(BENCH_DIR / "trivial_app.py", self.ctx.tmp / "trivial_app.py")
        super().start()


def make_servers(ctx: Context, wanted: list[str], h1c: str | None) -> tuple[list[Server], list[str]]:
    """The servers asked for that can run here, and a line per one skipped."""
    factories = {
        "apache": lambda: Apache(ctx),
        "nginx": lambda: Nginx(ctx),
        "lighttpd": lambda: Lighttpd(ctx),
        "gthread": lambda: GunicornCgid(ctx, "gthread"),
        "gevent": lambda: GunicornCgid(ctx, "gevent"),
        "gthread-h1c": lambda: GunicornCgid(ctx, "gthread", h1c=True),
        "trivial": lambda: TrivialGunicorn(ctx),
        "trivial-h1c": lambda: TrivialGunicorn(ctx, h1c=True),
    }
    servers, skipped = [], []
    for key in wanted:
        srv = factories[key]()
        why = srv.missing()
        if key.endswith("-h1c") and why is None:
            if "http_parser" not in ctx.gunicorn_settings:
                why = "this gunicorn has no http_parser setting (gunicorn >= 25 has)"
            elif h1c is None:
                why = "gunicorn-h1c not installed (pip install gunicorn-h1c)"
        if why is not None:
            hint = f" ({srv.install_hint})" if srv.install_hint else ""
            skipped.append(f"{srv.label}: skipped, {why}{hint}")
            continue
        servers.append(srv)
    return servers, skipped


SERVER_KEYS = ("apache", "nginx", "lighttpd", "gthread", "gevent", "gthread-h1c", "trivial", "trivial-h1c")
