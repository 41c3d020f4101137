"""The CGI daemon side: the supervisor and the daemon that forks scripts.

Runs in a fresh interpreter started from gunicorn's master; nothing here
imports gunicorn or gevent, because the daemon's size is paid on every spawn.
"""
