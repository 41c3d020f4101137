from __future__ import annotations

import pytest

from gunicorn_cgid.daemon import spawn


@pytest.fixture(params=["c", "posix"])
def spawn_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both spawn paths: the C one (skipped where it is not built) and the pure-Python fallback."""
    if request.param == "c" and spawn._native is None:
        pytest.skip("the C spawn path is not built here")
    if request.param == "posix":
        monkeypatch.setattr(spawn, "_native", None)
    return request.param
