"""The Kantata sandbox: Kantata OX API v1 (workspaces, stories, time entries and expenses) with Kantata's paths,
indexed response shape, auth and error shape."""

from __future__ import annotations

import re

from ..faults import check, error
from ..http import sandbox_view
from . import stories, time_entries, workspaces

# path → handler(request, match)
ROUTES = [
    (re.compile(r"api/v1/workspaces\.json"), workspaces.workspaces),
    (re.compile(r"api/v1/workspaces/(\d+)\.json"), workspaces.workspace),
    (re.compile(r"api/v1/stories(?:/(\d+))?\.json"), stories.stories),
    (re.compile(r"api/v1/(time_entries|expenses)\.json"), time_entries.listing),
]


@sandbox_view
def kantata(request, path: str):
    if (denied := check(request, "kantata")) is not None:
        return denied
    for pattern, handler in ROUTES:
        if (match := pattern.fullmatch(path)) is not None:
            return handler(request, match)
    return error("kantata", 404, f"No route matches /{path}", "not_found")
