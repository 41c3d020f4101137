"""Module boundaries: what each process imports, and which modules stay pure."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "gunicorn_cgid"
PURE = ["errors", "environ", "mapping", "headers", "conditional", "wire", "scriptlog", "logsafe", "admission"]


def test_daemon_never_imports_gunicorn_or_gevent():
    code = ("import sys; import gunicorn_cgid.daemon.supervisor, gunicorn_cgid.daemon.server; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('gunicorn', 'gevent', 'logging')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=str(PACKAGE.parent))
    assert result.returncode == 0, result.stdout + result.stderr


def test_pure_modules_import_only_the_stdlib_and_each_other():
    allowed_local = {"gunicorn_cgid." + name for name in PURE} | {"gunicorn_cgid"}
    for name in PURE:
        tree = ast.parse((PACKAGE / (name + ".py")).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for mod in mods:
                top = mod.split(".")[0]
                if top == "gunicorn_cgid":
                    assert mod in allowed_local, "%s imports %s" % (name, mod)
                else:
                    assert top in sys.stdlib_module_names, "%s imports %s" % (name, mod)
                    assert top not in ("socket", "select", "selectors", "subprocess", "threading"), \
                        "%s does I/O through %s" % (name, mod)


def test_worker_modules_never_import_master_code():
    """The worker gets what it needs from post_fork (worker/context.py), not from hooks."""
    for path in sorted((PACKAGE / "worker").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""] + ["%s.%s" % (node.module, a.name) for a in node.names]
            else:
                continue
            for mod in mods:
                assert mod not in ("gunicorn_cgid.hooks", "gunicorn_cgid.cli") and not mod.startswith(
                    ("gunicorn_cgid.daemon", "gunicorn_cgid.hooks.")), "%s imports %s" % (path.name, mod)
