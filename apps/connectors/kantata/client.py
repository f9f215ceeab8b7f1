"""Kantata OX (formerly Mavenlink) API v1: workspaces (projects).

Kantata has no upsert, so the project stage searches before it creates: the workspace title carries the
engagement code ("ENG-000123 · Acme rollout") and `GET /api/v1/workspaces.json?search=ENG-000123` finds it on a
retry. Responses are Kantata's indexed shape: `results` lists `{key, id}`, and `workspaces` maps id → object.
Validation errors come back as 422 `{"errors": [{"type": "validation", "message": …, "field": …}]}`.
"""

from __future__ import annotations

from apps.connectors.base import BaseClient, path, safe_json


class KantataClient(BaseClient):
    system = "kantata"

    def error_detail(self, response):
        body = safe_json(response) or {}
        errors = body.get("errors") if isinstance(body, dict) else None
        if errors and isinstance(errors, list) and isinstance(errors[0], dict):
            e = errors[0]
            return (e.get("message", ""), e.get("field", ""), e.get("type", ""))
        return (response.text[:300], "", "")

    def find_workspace(self, code: str) -> str | None:
        r = self.request("GET", "/api/v1/workspaces.json", params={"search": code, "per_page": 5},
                         summary=f"search workspace {code}")
        body = r.json()
        for ref in body.get("results", []):
            ws = (body.get("workspaces") or {}).get(str(ref.get("id")), {})
            if (ws.get("title") or "").startswith(code):
                return str(ref["id"])
        return None

    def probe(self) -> None:
        self.request("GET", "/api/v1/workspaces.json", params={"per_page": 1}, summary="probe")

    def update_workspace(self, workspace_id: str, fields: dict) -> str:
        """Update a workspace's fields (budget, dates): `PUT /api/v1/workspaces/{id}.json` {"workspace": {...}}.
        The same values sent twice leave it as it was, so a retried change order is harmless."""
        r = self.request("PUT", path("/api/v1/workspaces", f"{workspace_id}.json"), json_body={"workspace": fields},
                         summary=f"update workspace {workspace_id}: {', '.join(sorted(fields))}")
        body = r.json()
        return str(body["results"][0]["id"])

    def create_workspace(self, fields: dict) -> str:
        r = self.request("POST", "/api/v1/workspaces.json", json_body={"workspace": fields},
                         summary=f"create workspace {fields.get('title', '')}")
        body = r.json()
        return str(body["results"][0]["id"])
