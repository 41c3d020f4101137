#!/usr/bin/python3
# Mercurial's hgweb as a CGI script: Debian's mercurial-common ships the
# original as /usr/share/doc/mercurial-common/examples/hgweb.cgi; this one
# takes its settings from the environment gunicorn.conf.py gives it.
#
# /usr/bin/python3 is Debian's Python, the one the mercurial package installs
# into (not the Python gunicorn runs under, which may be another).
#
#   HGWEB_CONFIG  the hgweb.config beside this file ([web] settings)
#   HG_ROOT       directory whose Mercurial repositories are served

import os

from mercurial import demandimport

demandimport.enable()

from mercurial import ui as uimod  # noqa: E402
from mercurial.hgweb import hgweb, wsgicgi  # noqa: E402

ui = uimod.ui.load()
ui.readconfig(os.fsencode(os.environ["HGWEB_CONFIG"]), trust=True)
ui.setconfig(b"ui", b"report_untrusted", b"off", b"hgweb.cgi")
ui.setconfig(b"ui", b"nontty", b"true", b"hgweb.cgi")
ui.setconfig(b"progress", b"disable", b"true", b"hgweb.cgi")

# Every repository under HG_ROOT, at /<its path below HG_ROOT>.
repos = [(b"/", os.path.join(os.fsencode(os.environ["HG_ROOT"]), b"*"))]
wsgicgi.launch(hgweb(repos, baseui=ui))
