"""The optional C spawn path; everything else is in pyproject.toml.

``optional=True``: without a compiler or Python's headers the build goes on
without it, and the daemon uses os.posix_spawn (see daemon/spawn.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("gunicorn_cgid.daemon._spawn", ["gunicorn_cgid/daemon/_spawn.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-missing-field-initializers"])])
