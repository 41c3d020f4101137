"""git's smart HTTP server, ``git http-backend``: clone, fetch and push over HTTP.

From the repository root:

    GIT_ROOT=/srv/git gunicorn -c examples/git-http-backend/gunicorn.conf.py gunicorn_cgid:app

then ``git clone http://127.0.0.1:8000/git/<repo>.git``. Needs Debian's ``git``.
Pushing needs authentication in front, or ``http.receivepack`` set in a
repository: see README.md.
"""

import os

from gunicorn_cgid.hooks import *  # noqa: F401,F403  (starts and stops the CGI daemon)

GIT_HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"  # Debian's git package
GIT_ROOT = os.environ.get("GIT_ROOT", "/srv/git")         # the repositories served under /git/

# What is written (the daemon's socket, the workers' heartbeat files) goes
# under chdir: run/ and logs/ are the only writable directories needed.
chdir = os.path.dirname(os.path.abspath(__file__))
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
    # Apache: ScriptAlias /git/ /usr/lib/git-core/git-http-backend/ with SetEnv in its <Location>.
    "/git/": {
        "path": GIT_HTTP_BACKEND,
        "env": {
            "GIT_PROJECT_ROOT": GIT_ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",  # serve every repository, without a git-daemon-export-ok file
        },
        # Repositories owned by another user than this server's are refused by git
        # ("dubious ownership") unless safe.directory says otherwise: see README.md.
        "pass_env": ["GIT_CONFIG_COUNT", "GIT_CONFIG_KEY_0", "GIT_CONFIG_VALUE_0"],
        "timeout": 300,  # a large fetch can keep git busy packing before it writes anything
    },
}
