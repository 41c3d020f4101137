"""Example gunicorn-cgid configuration: serves examples/cgi-bin on 127.0.0.1:8000.

Run from anywhere:  gunicorn -c examples/gunicorn.conf.py gunicorn_cgid:app
"""

import os
import stat
import sys

from gunicorn_cgid.hooks import *  # noqa: F401,F403  (starts and stops the CGI daemon)

here = os.path.dirname(os.path.abspath(__file__))


def _others_can_use(path: str) -> bool:
    """Whether an unprivileged user can reach ``path`` (every directory above it searchable)."""
    path = os.path.realpath(path)
    while path != "/":
        path = os.path.dirname(path)
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
    return True


if os.geteuid() == 0:
    # Scripts never run as root: started as root, workers and scripts run as
    # nobody. Only when nobody cannot use this Python or these files (a
    # Python under /root, say) does this example fall back to root, and
    # gunicorn-cgid then logs a warning at every start.
    if _others_can_use(sys.executable) and _others_can_use(os.path.join(here, "cgi-bin", "hello.sh")):
        user, group = "nobody", "nogroup"
    else:
        cgi_allow_root = True

chdir = here                      # relative CGI paths below are resolved from here
bind = "127.0.0.1:8000"
worker_class = "gthread"          # or "gevent" (pip install 'gunicorn-cgid[gevent]'), or "sync"
workers = 2
threads = 16

# CGI settings (Apache equivalents in README.md)
# The socket and the log live in separate directories: run/ belongs to the
# user who starts gunicorn and nobody else may write there, while logs/ may
# be the workers' (they write the ScriptLog).
script_sock = "run/cgisock"       # ScriptSock
script_log = "logs/cgi.log"       # ScriptLog: failed CGI requests are recorded here
script_alias = {"/cgi-bin/": "cgi-bin/"}
cgi_timeout = 60                  # CGIDScriptTimeout (idle)
cgi_env = {"EXAMPLE": "gunicorn-cgid"}
if os.access("/usr/bin/php-cgi", os.X_OK):  # Apache's Action/AddHandler for PHP
    cgi_interpreters = {".php": "/usr/bin/php-cgi"}

static_alias = {"/static/": "static/"}  # Apache's Alias: files served as they are
health_path = "/healthz"          # 200 when the CGI daemon answers, else 503 (for probes)

access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms exit=%({cgi.exit_status}e)s cpu=%({cgi.cpu_ms}e)sms'
accesslog = "-"
