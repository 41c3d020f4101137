"""cgit with its stylesheet and logo, served by gunicorn-cgid alone (no other web server).

From the repository root:

    CGIT_REPOS=$HOME/src gunicorn -c examples/cgit/gunicorn.conf.py gunicorn_cgid:app

then open http://127.0.0.1:8000/. Needs Debian's ``cgit`` package. See README.md.
"""

import os

from gunicorn_cgid.hooks import *  # noqa: F401,F403  (starts and stops the CGI daemon)

here = os.path.dirname(os.path.abspath(__file__))

CGIT_CGI = "/usr/lib/cgit/cgit.cgi"  # Debian's cgit package
CGIT_SHARE = "/usr/share/cgit/"      # cgit.css, cgit.png, favicon.ico
REPOS = os.environ.get("CGIT_REPOS", "/srv/git")  # scanned for git repositories

# What never changes is found from this file; what is written (the daemon's
# socket, the workers' heartbeat files) goes under chdir: run/ and logs/ are
# the only writable directories the container needs.
chdir = here
bind = "127.0.0.1:8000"
worker_class = "gevent"
workers = 2
worker_tmp_dir = "run"
script_sock = "run/cgid/cgisock"  # a directory of its own: run/ itself may be writable by all (emptyDir)
control_socket = "run/gunicorn.ctl"  # gunicornc's socket (gunicorn >= 25.1); else in $HOME

# Logs to the container's output.
errorlog = "-"
accesslog = "-"
script_log = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms exit=%({cgi.exit_status}e)s cpu=%({cgi.cpu_ms}e)sms'

health_path = "/healthz"  # 200 while the CGI daemon answers: for readiness and liveness probes

static_alias = {"/cgit-static/": CGIT_SHARE}
script_alias = {
    "/": {
        "path": CGIT_CGI,
        "env": {"CGIT_CONFIG": os.path.join(here, "cgitrc"), "CGIT_REPOS": REPOS},
        # Repositories owned by another user than this server's are refused by git's
        # library ("dubious ownership") unless safe.directory says otherwise: see README.md.
        "pass_env": ["GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0"],
    },
}
