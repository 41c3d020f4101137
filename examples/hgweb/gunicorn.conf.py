"""Mercurial's hgweb: browse repositories and ``hg clone`` over HTTP.

From the repository root:

    HG_ROOT=/srv/hg gunicorn -c examples/hgweb/gunicorn.conf.py gunicorn_cgid:app

then open http://127.0.0.1:8000/, or ``hg clone http://127.0.0.1:8000/<repo>``.
Needs Debian's ``mercurial``. See README.md.
"""

import os

from gunicorn_cgid.hooks import *  # noqa: F401,F403  (starts and stops the CGI daemon)

here = os.path.dirname(os.path.abspath(__file__))

HG_ROOT = os.environ.get("HG_ROOT", "/srv/hg")  # the repositories served

# What is written (the daemon's socket, the workers' heartbeat files) goes
# under chdir: run/ and logs/ are the only writable directories needed.
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

script_alias = {
    # Every URL runs hgweb.cgi, the rest of the URL being its PATH_INFO.
    "/": {
        "path": os.path.join(here, "hgweb.cgi"),
        "env": {
            "HGWEB_CONFIG": os.path.join(here, "hgweb.config"),
            "HG_ROOT": HG_ROOT,
            "HGENCODING": "UTF-8",
        },
        "timeout": 300,  # a large clone can keep hg busy before it writes anything
    },
}
