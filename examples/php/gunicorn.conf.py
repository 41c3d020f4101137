"""A small PHP application through ``php-cgi``, with its stylesheet served as a static file.

From the repository root:

    gunicorn -c examples/php/gunicorn.conf.py gunicorn_cgid:app

then open http://127.0.0.1:8000/. Needs Debian's ``php-cgi``. See README.md.
"""

import os

from gunicorn_cgid.hooks import *  # noqa: F401,F403  (starts and stops the CGI daemon)

here = os.path.dirname(os.path.abspath(__file__))

PHP_CGI = "/usr/bin/php-cgi"  # Debian's php-cgi package

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

static_alias = {"/static/": os.path.join(here, "static") + "/"}
script_alias = {
    # Every other URL runs the front controller; the rest of the URL is its PATH_INFO.
    "/": {
        "path": os.path.join(here, "public", "index.php"),
        "interpreters": {".php": PHP_CGI},  # Apache's Action + AddHandler; the file needs no exec bit
        "env": {"PHP_INI_SCAN_DIR": ":" + os.path.join(here, "php.d")},  # ":" keeps Debian's conf.d
        "timeout": 30,
        "limit_request_body": 1024 * 1024,  # forms only
    },
}
