"""Example gunicorn-cgid configuration: serves examples/cgi-bin on 127.0.0.1:8000.

Run from anywhere:  gunicorn -c examples/gunicorn.conf.py gunicorn_cgid:app
"""

import os

from gunicorn_cgid.hooks import *  # noqa: F401,F403  (starts and stops the CGI daemon)

here = os.path.dirname(os.path.abspath(__file__))

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
