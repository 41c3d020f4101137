"""The recipes under examples/, each run from its own gunicorn.conf.py against the real Debian packages.

Every server is the stock ``gunicorn -c examples/<app>/gunicorn.conf.py
gunicorn_cgid:app`` command; only the bind address and gunicorn's ``chdir``
(where the recipe writes its socket) come from ``GUNICORN_CMD_ARGS``, and the
repositories from the environment variable the recipe documents. Then a
real client does what a user would: cgit pages (and one in headless
Chromium, styled by cgit.css), git clone and push, PHP pages and a form,
hg clone and an hgweb page. Skipped where a package is missing; .ci/run
installs them all.
"""

from __future__ import annotations

import ast
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import Server, children_of, wait_until
from .test_real_apps import client_env, run

REPO = Path(__file__).resolve().parent.parent.parent
EXAMPLES = REPO / "examples"
RECIPES = ["cgit", "git-http-backend", "php", "hgweb"]

CGIT_CGI = "/usr/lib/cgit/cgit.cgi"
CGIT_SHARE = Path("/usr/share/cgit")
GIT_HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
PHP_CGI = "/usr/bin/php-cgi"
CHROMIUM = "/usr/bin/chromium"

needs_cgit = pytest.mark.skipif(
    not os.access(CGIT_CGI, os.X_OK) or not (CGIT_SHARE / "cgit.css").is_file() or shutil.which("git") is None,
    reason="Debian's cgit package (%s, %s) and git are needed" % (CGIT_CGI, CGIT_SHARE))
needs_git = pytest.mark.skipif(
    shutil.which("git") is None or not os.access(GIT_HTTP_BACKEND, os.X_OK),
    reason="Debian's git package (git, %s) is needed" % GIT_HTTP_BACKEND)
needs_php = pytest.mark.skipif(not os.access(PHP_CGI, os.X_OK), reason="Debian's php-cgi package (%s) is needed"
                               % PHP_CGI)
needs_hg = pytest.mark.skipif(
    shutil.which("hg") is None or subprocess.run(["/usr/bin/python3", "-c", "import mercurial.hgweb"],
                                                 capture_output=True).returncode != 0,
    reason="Debian's mercurial package (hg, and mercurial for /usr/bin/python3) is needed")
needs_chromium = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                    reason="Debian's chromium package (%s) is needed" % CHROMIUM)


def gunicorn_command() -> list[str]:
    """The stock gunicorn command of this interpreter's environment."""
    script = Path(sys.executable).parent / "gunicorn"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "gunicorn"]


class RecipeServer(Server):
    """``gunicorn -c examples/<recipe>/gunicorn.conf.py gunicorn_cgid:app``, unchanged.

    ``root`` becomes gunicorn's chdir, so the recipe's run/ (socket, heartbeat
    files) lands there instead of in the source tree.
    """

    def __init__(self, root: Path, recipe: str, env: dict[str, str]) -> None:
        super().__init__(root, "gevent", {})
        self.recipe = recipe
        self.extra_env = env
        self.conf = EXAMPLES / recipe / "gunicorn.conf.py"

    def write_conf(self, **overrides: object) -> None:
        raise AssertionError("a recipe runs with its own gunicorn.conf.py")

    def start(self, wait: bool = True) -> RecipeServer:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUNICORN_")}
        env["GUNICORN_CGID_ALLOW_ROOT"] = "1"  # the tests run as root; the recipes' images do not
        env.update(self.extra_env)
        env["GUNICORN_CMD_ARGS"] = "--bind 127.0.0.1:%d --chdir %s" % (self.port, self.root)
        # Logs go to stdout and stderr (errorlog "-", accesslog "-"): Server.log() reads this file.
        self.proc = subprocess.Popen(
            gunicorn_command() + ["-c", str(self.conf), "gunicorn_cgid:app"],
            cwd=str(REPO), env=env, stdin=subprocess.DEVNULL,
            stdout=open(self.root / "stdout.log", "ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        if wait:
            wait_until(self.ready, 20, what="%s recipe to answer on port %d (log: %s)"
                       % (self.recipe, self.port, self.log()))
        return self

    def ready(self) -> bool:
        """The port answers and every worker has entered its serving loop.

        gunicorn 27's gevent worker ignores a TERM that arrives while it
        boots (the master then waits its whole graceful_timeout), even with
        a plain WSGI app; so the server counts as ready once each of the
        recipe's workers has beaten its heartbeat: the file's mtime becomes
        ``time.monotonic()``, far below any creation time.
        """
        if not super().ready():
            return False
        workers = [pid for pid in children_of(self.pid) if not self._is_supervisor(pid)]
        if len(workers) != recipe_settings(self.recipe)["workers"]:
            return False
        return all(self._heartbeat_mtime(pid) < 1e9 for pid in workers)

    @staticmethod
    def _is_supervisor(pid: int) -> bool:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                return b"gunicorn_cgid.daemon" in f.read()
        except OSError:
            return False

    @staticmethod
    def _heartbeat_mtime(pid: int) -> float:
        try:
            for fd in os.listdir("/proc/%d/fd" % pid):
                link = "/proc/%d/fd/%s" % (pid, fd)
                if "wgunicorn-" in os.readlink(link):
                    return os.stat(link).st_mtime
        except OSError:
            pass
        return float("inf")

    def access_lines(self, needle: str) -> list[str]:
        return [line for line in (self.root / "stdout.log").read_text(errors="replace").splitlines()
                if needle in line]


@pytest.fixture
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """Factory: ``recipe("cgit", CGIT_REPOS=...)`` returns a running RecipeServer; all of it is gone afterwards."""
    servers: list[RecipeServer] = []

    def start(name: str, **env: str) -> RecipeServer:
        root = tmp_path_factory.mktemp(name)
        os.chmod(root, 0o755)
        for volume in ("run", "logs"):  # as a container's tmpfs or emptyDir volumes: writable by all
            (root / volume).mkdir()
            os.chmod(root / volume, 0o1777)
        server = RecipeServer(root, name, env)
        servers.append(server)
        return server.start()

    yield start
    problems = []
    for server in servers:
        problems += server.shut_down()
        sock_dir = server.root / "run" / "cgid"
        if sock_dir.exists() and any(sock_dir.iterdir()):
            problems.append("socket not removed: %s" % list(sock_dir.iterdir()))
    assert not problems, problems


def text(status: int, body: bytes, srv: RecipeServer, expect: int = 200) -> str:
    assert status == expect, (status, body[:2000], srv.log())
    return body.decode("utf-8", errors="replace")


def git_repo_with_history(path: Path, env: dict[str, str]) -> None:
    """A bare repository with two commits on main: README and src/hello.c."""
    run(["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)], env)
    (path / "description").write_text("A demo repository\n")
    work = path.parent / (path.name + ".work")
    run(["git", "clone", "--quiet", str(path), str(work)], env)
    run(["git", "checkout", "--quiet", "-b", "main"], env, cwd=work)
    (work / "README").write_text("demo repository\n")
    run(["git", "add", "README"], env, cwd=work)
    run(["git", "commit", "--quiet", "-m", "Add a README"], env, cwd=work)
    (work / "src").mkdir()
    (work / "src" / "hello.c").write_text('int main(void) { return puts("hello"), 0; }\n')
    run(["git", "add", "src"], env, cwd=work)
    run(["git", "commit", "--quiet", "-m", "Say hello from C"], env, cwd=work)
    run(["git", "push", "--quiet", "origin", "main"], env, cwd=work)
    shutil.rmtree(work)


# --- every recipe: the container rules ---------------------------------------------------------


def recipe_settings(name: str) -> dict[str, object]:
    """The simple assignments of a recipe's gunicorn.conf.py, read without running it."""
    tree = ast.parse((EXAMPLES / name / "gunicorn.conf.py").read_text())
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                out[node.targets[0].id] = node.value
    return out


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_is_ready_for_a_read_only_container(name):
    settings = recipe_settings(name)
    assert settings["errorlog"] == "-" and settings["accesslog"] == "-", "logs go to the container's output"
    assert settings.get("script_log") in (None, "-")
    assert settings["health_path"] == "/healthz"
    assert settings["script_sock"] == "run/cgid/cgisock"
    assert settings["worker_tmp_dir"] == "run"
    dockerfile = (EXAMPLES / name / "Dockerfile").read_text()
    assert re.search(r"^FROM python:[\d.]+-slim", dockerfile, re.M)
    assert "COPY . /src" in dockerfile
    assert re.search(r'pip install [^\n]*"?/src\[gevent\]"?', dockerfile)
    user = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user and user[-1] not in ("root", "0"), "the image runs as a non-root user"
    assert re.search(r'VOLUME \["/app/run", "/app/logs"\]', dockerfile)
    readme = (EXAMPLES / name / "README.md").read_text()
    assert "gunicorn -c examples/%s/gunicorn.conf.py gunicorn_cgid:app" % name in readme
    assert "docker build -f examples/%s/Dockerfile" % name in readme
    assert "--read-only" in readme


# --- cgit ----------------------------------------------------------------------------------


@pytest.fixture
def cgit(recipe, tmp_path):
    env = client_env(tmp_path / "home")
    repos = tmp_path / "repos"
    repos.mkdir()
    git_repo_with_history(repos / "demo.git", env)
    return recipe("cgit", CGIT_REPOS=str(repos))


@needs_cgit
def test_cgit_index_log_and_tree(cgit):
    page = text(*cgit.get("/")[::2], cgit)
    assert "<link rel='stylesheet' type='text/css' href='/cgit-static/cgit.css'/>" in page
    assert "href='/demo/'" in page and "A demo repository" in page

    log = text(*cgit.get("/demo/log/")[::2], cgit)
    assert "Say hello from C" in log and "Add a README" in log
    assert log.index("Say hello from C") < log.index("Add a README")

    tree = text(*cgit.get("/demo/tree/")[::2], cgit)
    assert "href='/demo/tree/README'" in tree and "href='/demo/tree/src'" in tree
    blob = text(*cgit.get("/demo/tree/src/hello.c")[::2], cgit)
    assert "int main(void)" in blob and "blob content" in blob
    plain = text(*cgit.get("/demo/plain/src/hello.c")[::2], cgit)
    assert plain == 'int main(void) { return puts("hello"), 0; }\n'

    status, _, body = cgit.get("/no-such-repo/log/")
    assert status == 404, (status, body[:500])
    assert cgit.access_lines('"GET /demo/log/ HTTP/1.1" 200')


@needs_cgit
def test_cgit_static_files(cgit):
    for name, ctype in (("cgit.css", "text/css"), ("cgit.png", "image/png")):
        status, headers, body = cgit.get("/cgit-static/" + name)
        assert status == 200, (name, status, body[:300], cgit.log())
        assert headers["content-type"].startswith(ctype), headers
        assert body == (CGIT_SHARE / name).read_bytes()
    status, _, _ = cgit.get("/cgit-static/../cgitrc")
    assert status in (400, 404)


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``).

    Commands go in on the browser's fd 3, answers and events come out of its
    fd 4, as JSON messages ended by a NUL byte: no websocket, no driver.
    """

    def __init__(self, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # High numbers first, so that moving them to 3 and 4 cannot overwrite each other.
        high = [os.dup(fd) for fd in (to_browser_r, from_browser_w)]
        high = [self._above(fd, 10) for fd in high]

        def place_pipes() -> None:
            os.dup2(high[0], 3)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-extensions", "--no-proxy-server", "--remote-debugging-pipe",
             "--user-data-dir=%s" % profile, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=open(profile.parent / "chromium.log", "ab"), stderr=subprocess.STDOUT,
            preexec_fn=place_pipes, close_fds=False, start_new_session=True)
        for fd in (to_browser_r, from_browser_w, *high):
            os.close(fd)
        self._buffer = b""
        self._next_id = 0

    @staticmethod
    def _above(fd: int, low: int) -> int:
        import fcntl
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, low)
        os.close(fd)
        return new

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise AssertionError("no answer from Chromium in time")
            chunk = os.read(self._from_browser, 65536)
            if not chunk:
                raise AssertionError("Chromium closed its DevTools pipe (exit %s)" % self.proc.poll())
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 15) -> dict:
        self._next_id += 1
        msg: dict[str, object] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise AssertionError("%s failed: %s" % (method, answer["error"]))
                return answer["result"]

    def evaluate(self, session: str, expression: str) -> object:
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session)
        if "exceptionDetails" in result:
            raise AssertionError("%s: %s" % (expression, result["exceptionDetails"]))
        return result["result"].get("value")

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.call("Browser.close", timeout=5)
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its renderers and helpers, whatever the above did
        except ProcessLookupError:
            pass
        self.proc.wait(5)
        os.close(self._to_browser)
        os.close(self._from_browser)


@needs_cgit
@needs_chromium
def test_cgit_page_is_styled_in_chromium(cgit, tmp_path):
    """The index page in a real browser gets cgit.css and cgit.png from gunicorn-cgid, with no other server."""
    browser = Chromium(tmp_path / "profile")
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"}, timeout=30)["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        nav = browser.call("Page.navigate", {"url": "http://127.0.0.1:%d/" % cgit.port}, session)
        assert "errorText" not in nav, nav
        wait_until(lambda: browser.evaluate(session, "document.readyState === 'complete'"
                                                     " && document.querySelector('td.logo img').complete"),
                   20, what="the cgit page and its logo to load in Chromium")
        found = browser.evaluate(session, """(() => {
            const tabs = getComputedStyle(document.querySelector('div#cgit table.tabs'));
            const logo = document.querySelector('td.logo img');
            return {
                title: document.title,
                border: tabs.borderBottomStyle + ' ' + tabs.borderBottomWidth,
                fontFamily: getComputedStyle(document.querySelector('div#cgit')).fontFamily,
                sheets: Array.from(document.styleSheets, s => [s.href, s.cssRules.length]),
                logo: [logo.naturalWidth, logo.naturalHeight],
            };
        })()""")
    finally:
        browser.close()
    assert isinstance(found, dict), found
    assert found["title"] == "Git repositories"
    # Only cgit.css sets these: a browser's own style gives a table no bottom border.
    assert found["border"] == "solid 3px", (found, cgit.log())
    assert found["fontFamily"] == "sans-serif", found
    assert found["sheets"] and found["sheets"][0][0].endswith("/cgit-static/cgit.css") and found["sheets"][0][1] > 50
    assert found["logo"][0] > 0 and found["logo"][1] > 0, "cgit.png was not served"
    assert cgit.access_lines('"GET /cgit-static/cgit.css HTTP/1.1" 200')


# --- git http-backend ------------------------------------------------------------------------


@needs_git
def test_git_http_backend_clone_push_clone(recipe, tmp_path):
    env = client_env(tmp_path / "home")
    root = tmp_path / "git"
    root.mkdir()
    bare = root / "project.git"
    git_repo_with_history(bare, env)
    # Anonymous pushes, for this test only: see the recipe's README for authentication in front.
    run(["git", "config", "http.receivepack", "true"], env, cwd=bare)
    srv = recipe("git-http-backend", GIT_ROOT=str(root))
    url = "http://127.0.0.1:%d/git/project.git" % srv.port

    first = tmp_path / "first"
    run(["git", "clone", "--quiet", url, str(first)], env)
    assert (first / "src" / "hello.c").is_file()
    (first / "NEWS").write_text("pushed through gunicorn-cgid\n")
    run(["git", "add", "NEWS"], env, cwd=first)
    run(["git", "commit", "--quiet", "-m", "Add NEWS over HTTP"], env, cwd=first)
    pushed = run(["git", "rev-parse", "HEAD"], env, cwd=first).stdout.decode().strip()
    run(["git", "push", "--quiet", "origin", "main"], env, cwd=first)

    second = tmp_path / "second"
    run(["git", "clone", "--quiet", url, str(second)], env)
    assert run(["git", "rev-parse", "HEAD"], env, cwd=second).stdout.decode().strip() == pushed
    assert (second / "NEWS").read_text() == "pushed through gunicorn-cgid\n"
    log = run(["git", "log", "--format=%s"], env, cwd=second).stdout.decode().splitlines()
    assert log == ["Add NEWS over HTTP", "Say hello from C", "Add a README"]
    assert srv.access_lines('"POST /git/project.git/git-receive-pack HTTP/1.1" 200')

    status, _, body = srv.get("/git/missing.git/info/refs?service=git-upload-pack")
    assert status == 404, (status, body[:300])


# --- PHP -------------------------------------------------------------------------------------


@needs_php
def test_php_pages_and_form(recipe):
    srv = recipe("php")
    home = text(*srv.get("/")[::2], srv)
    assert "<title>PHP through gunicorn-cgid</title>" in home
    assert '<link rel="stylesheet" href="/static/style.css">' in home
    assert '<a href="/form">' in home and '<a href="/server">' in home

    status, headers, body = srv.get("/server?x=%3Cscript%3E", headers={"User-Agent": "<b>agent</b>",
                                                                     "Cookie": "secret=do-not-show"})
    page = text(status, body, srv)
    assert "x-powered-by" not in headers, "expose_php = Off from the recipe's php.d"
    assert "<th>GATEWAY_INTERFACE</th><td><code>CGI/1.1</code>" in page
    assert "<th>REQUEST_METHOD</th><td><code>GET</code>" in page
    assert "<th>SERVER_PORT</th><td><code>%d</code>" % srv.port in page
    assert "<th>PATH_INFO</th><td><code>/server</code>" in page
    assert "<th>QUERY_STRING</th><td><code>x=%3Cscript%3E</code>" in page
    assert "&lt;b&gt;agent&lt;/b&gt;" in page and "<b>agent</b>" not in page
    assert "do-not-show" not in page and "COOKIE" not in page
    assert "(cgi-fcgi)" in page

    form = text(*srv.get("/form")[::2], srv)
    assert '<form method="post" action="/form">' in form
    status, _, body = srv.request(
        "POST", "/form", body="name=J%C3%BCrgen+%3Cb%3E&message=line+one%0D%0A%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        headers={"Content-Type": "application/x-www-form-urlencoded"})
    page = text(status, body, srv)
    assert "Thank you, <strong>J\u00fcrgen &lt;b&gt;</strong>" in page
    assert "line one<br />" in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page

    status, _, body = srv.request("POST", "/form", body=b"name=&message=",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert "A name of 1 to 80 characters is needed." in text(status, body, srv, expect=422)

    status, _, body = srv.get("/missing")
    assert "There is no page at <code>/missing</code>" in text(status, body, srv, expect=404)
    # The pages under src/ are not reachable as URLs: only the front controller runs.
    status, _, body = srv.get("/../src/server.php")
    assert status in (400, 404), (status, body[:300])


# --- hgweb -----------------------------------------------------------------------------------


def hg_env(home: Path) -> dict[str, str]:
    env = client_env(home)
    env.update({"HGRCPATH": "", "HGPLAIN": "1", "HGUSER": "Test Author <author@example.com>",
                "HGENCODING": "UTF-8"})
    return env


@needs_hg
def test_hgweb_clone_and_browse(recipe, tmp_path):
    env = hg_env(tmp_path / "home")
    root = tmp_path / "hg"
    repo = root / "demo"
    repo.mkdir(parents=True)
    run(["hg", "init"], env, cwd=repo)
    (repo / "hello.txt").write_text("hello from mercurial\n")
    run(["hg", "commit", "--quiet", "--addremove", "-m", "First hg commit"], env, cwd=repo)
    (repo / "hello.txt").write_text("hello again\n")
    run(["hg", "commit", "--quiet", "-m", "Second hg commit"], env, cwd=repo)
    srv = recipe("hgweb", HG_ROOT=str(root))

    index = text(*srv.get("/")[::2], srv)
    assert "Mercurial repositories index" in index and 'href="/demo/"' in index
    log = text(*srv.get("/demo/log")[::2], srv)
    assert "Second hg commit" in log and "First hg commit" in log
    raw = text(*srv.get("/demo/raw-file/tip/hello.txt")[::2], srv)
    assert raw == "hello again\n"

    clone = tmp_path / "clone"
    run(["hg", "clone", "--quiet", "http://127.0.0.1:%d/demo" % srv.port, str(clone)], env)
    assert (clone / "hello.txt").read_text() == "hello again\n"
    assert run(["hg", "log", "--template", "{desc}\n"], env, cwd=clone).stdout.decode().splitlines() == [
        "Second hg commit", "First hg commit"]
    assert srv.access_lines('"GET /demo?cmd=getbundle HTTP/1.1" 200')


# --- Kubernetes ------------------------------------------------------------------------------


def test_kubernetes_manifests():
    yaml = pytest.importorskip("yaml", reason="PyYAML is needed to read examples/kubernetes")
    docs = []
    for path in sorted((EXAMPLES / "kubernetes").glob("*.yaml")):
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    kinds = {doc["kind"]: doc for doc in docs}
    assert {"Deployment", "Service", "PersistentVolumeClaim"} <= set(kinds), sorted(kinds)

    deployment = kinds["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz", probe
        assert container[probe]["httpGet"]["port"] == container["ports"][0]["name"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for path in ("/app/run", "/app/logs"):
        assert "emptyDir" in volumes[mounts[path]], path
    repos = volumes[mounts["/srv/git"]]
    claim = repos["persistentVolumeClaim"]["claimName"]
    assert kinds["PersistentVolumeClaim"]["metadata"]["name"] == claim
    assert kinds["PersistentVolumeClaim"]["spec"]["accessModes"] == ["ReadWriteMany"]
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    assert env["GIT_ROOT"] == "/srv/git"

    service = kinds["Service"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
