"""Static files beside the CGI scripts (Apache's Alias), and X-Sendfile answers.

Runs in the worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]


class StaticFiles:
    """Serves ``static_alias`` directories; built once per worker."""

    def __init__(self, aliases: dict[str, str]) -> None:
        self.aliases = aliases

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes] | None:
        """The response for a URL under a static prefix; None when no prefix matches."""
        return None

    def send_file(self, environ: dict[str, Any], start_response: StartResponse, path: str,
                  status: str, headers: list[tuple[str, str]]) -> Iterable[bytes]:
        """Answer with the file at ``path`` (already checked to be allowed), for X-Sendfile."""
        raise NotImplementedError
