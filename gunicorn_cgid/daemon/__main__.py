"""``python -m gunicorn_cgid.daemon``: the supervisor's entry point (see ``supervisor.main``)."""

import sys

from gunicorn_cgid.daemon.supervisor import main

sys.exit(main(sys.argv[1:]))
