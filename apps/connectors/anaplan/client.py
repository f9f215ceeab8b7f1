"""Anaplan Integration API v2 (bulk API): upload a file in chunks, run an import, poll its task.

The calls, relative to `{base}/2/0/workspaces/{workspaceId}/models/{modelId}`:
  POST files/{fileId}                    {"id", "name", "chunkCount": -1}: start a chunked upload
  PUT  files/{fileId}/chunks/{n}         application/octet-stream, chunks numbered from 0
  POST files/{fileId}/complete           {"id", "name", "chunkCount": n}: the file is whole
  POST imports/{importId}/tasks          {"localeName": "en_US"} → {"task": {"taskId": …}}
  GET  imports/{importId}/tasks/{taskId} → {"task": {"taskState": NOT_STARTED|IN_PROGRESS|COMPLETE|…,
                                            "currentStep", "result": {"successful", "failureDumpAvailable",
                                            "details": [{"localMessageText", "type", "values"}]}}}
  GET  imports/{importId}/tasks/{taskId}/dump → CSV of the rows that failed
Auth: `Authorization: AnaplanAuthToken <token>`. Errors: `{"status": {"code": 4xx, "message": "…"}}`.

A re-upload replaces the file and an import sets cell values, so repeating either (after a lost response) is
harmless. The ids come from the connection's settings (workspace_id, model_id, file_id, import_id); when a
setting is absent the sandbox model's id is used, so the demo works without configuration.
"""

from __future__ import annotations

import math
import time

import requests
from django.conf import settings as django_settings

from apps.connectors.base import (BaseClient, DownstreamError, elapsed_ms, http_session, log, parse_retry_after, path,
                                  safe_json)

# the sandbox model's ids (apps/sandbox/anaplan_api.py serves them): the defaults when a setting is absent
DEFAULT_SETTINGS = {
    "workspace_id": "8a81b08e654f3cef0165a2b1f4d70ab2",
    "model_id": "75A40874E6B64FA3AE0743278996850F",
    "file_id": "113000000042",
    "file_name": "handoff_actuals.csv",
    "import_id": "112000000042",
    "locale": "en_US",
    "chunk_bytes": 1_000_000,  # Anaplan takes chunks of 1–50 MB
    "poll_seconds": 2.0,  # between task polls (Anaplan asks for ≥ 5 s on long imports)
    "max_poll_seconds": 60.0,  # then the stage retries later, polling the same task
}

FINISHED_STATES = ("COMPLETE", "CANCELLED")


class AnaplanClient(BaseClient):
    system = "anaplan"

    def setting(self, name: str):
        value = (self.connection.settings or {}).get(name)
        return DEFAULT_SETTINGS[name] if value in (None, "") else value

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"AnaplanAuthToken {self.connection.credentials.get('access_token', '')}"}

    def error_detail(self, response):
        body = safe_json(response)
        status = body.get("status") if isinstance(body, dict) else None
        if isinstance(status, dict) and status.get("message"):
            return (str(status["message"]), "", str(status.get("code", "")))
        return (response.text[:300], "", "")

    @property
    def model_path(self) -> str:
        return path("/2/0/workspaces", self.setting("workspace_id"), "models", self.setting("model_id"))

    # ------------------------------------------------------------ files

    def upload_file(self, data: bytes) -> int:
        """Upload `data` as the import's source file, in chunks; returns the number of chunks."""
        file_id, name = self.setting("file_id"), self.setting("file_name")
        size = max(1, int(self.setting("chunk_bytes")))
        chunks = max(1, math.ceil(len(data) / size))
        file_path = path(self.model_path, "files", file_id)
        self.request("POST", file_path, json_body={"id": file_id, "name": name, "chunkCount": -1},
                     summary=f"start upload of {name} ({len(data)} bytes, {chunks} chunks)")
        for n in range(chunks):
            self.send_bytes("PUT", path(file_path, "chunks", n), data[n * size:(n + 1) * size],
                            summary=f"chunk {n + 1} of {chunks} of {name}")
        self.request("POST", path(file_path, "complete"), json_body={"id": file_id, "name": name, "chunkCount": chunks},
                     summary=f"complete upload of {name}")
        return chunks

    def send_bytes(self, method: str, path: str, data: bytes, *, summary: str) -> requests.Response:
        """A call with a binary body (BaseClient.request sends JSON): recorded and classified the same way."""
        handle = self.recorder.start(system=self.system, method=method, url=path, summary=summary)
        headers = {**self.auth_headers(), "Accept": "application/json", "Content-Type": "application/octet-stream"}
        t0 = time.monotonic()
        try:
            resp = http_session().request(method, f"{self.base_url}{path}", data=data, headers=headers,
                                          timeout=django_settings.HANDOFF_HTTP_TIMEOUT)
        except requests.RequestException as exc:
            ms = elapsed_ms(t0)
            kind = "timed out" if isinstance(exc, requests.Timeout) else "could not be reached"
            self.recorder.finish(handle, status=None, excerpt=str(exc)[:500], duration_ms=ms, outcome="transient")
            raise DownstreamError(f"{self.connection.name} {kind}", permanent=False, system=self.system) from exc
        ms = elapsed_ms(t0)
        log.info("%s %s %s -> %s in %d ms", self.system, method, path, resp.status_code, ms, extra={
            "system": self.system, "http_method": method, "path": path, "status": resp.status_code, "duration_ms": ms})
        if resp.status_code in self.ok_statuses:
            self.recorder.finish(handle, status=resp.status_code, excerpt=resp.text[:1000], duration_ms=ms,
                                 outcome="ok")
            return resp
        message, field, code = self.error_detail(resp)
        transient = resp.status_code in (408, 429) or resp.status_code >= 500
        self.recorder.finish(handle, status=resp.status_code, excerpt=resp.text[:1000], duration_ms=ms,
                             outcome="transient" if transient else "permanent")
        raise DownstreamError(message or f"{self.connection.name} answered {resp.status_code}",
                              permanent=not transient, system=self.system, status=resp.status_code, field=field,
                              code=code, retry_after=parse_retry_after(resp.headers.get("Retry-After")))

    # ------------------------------------------------------------ imports

    def start_import(self) -> str:
        """Run the import once; returns its task id."""
        import_id = self.setting("import_id")
        r = self.request("POST", path(self.model_path, "imports", import_id, "tasks"),
                         json_body={"localeName": self.setting("locale")}, summary=f"run import {import_id}")
        task_id = ((safe_json(r) or {}).get("task") or {}).get("taskId")
        if not task_id:
            raise DownstreamError(f"Anaplan answered without a task id: {r.text[:200]}", permanent=False,
                                  system=self.system, status=r.status_code)
        return str(task_id)

    def get_import_task(self, task_id: str) -> dict:
        r = self.request("GET", path(self.model_path, "imports", self.setting("import_id"), "tasks", task_id),
                         summary=f"poll import task {task_id}")
        return (safe_json(r) or {}).get("task") or {}

    def wait_for_import(self, task_id: str) -> dict | None:
        """Poll the task until it has finished (its task dict) or `max_poll_seconds` passed (None)."""
        deadline = time.monotonic() + float(self.setting("max_poll_seconds"))
        while True:
            task = self.get_import_task(task_id)
            if task.get("taskState") in FINISHED_STATES:
                return task
            if time.monotonic() + float(self.setting("poll_seconds")) > deadline:
                return None
            time.sleep(float(self.setting("poll_seconds")))

    def get_import_dump(self, task_id: str) -> str:
        """The CSV of the rows that failed (when the task result says failureDumpAvailable)."""
        r = self.request("GET", path(self.model_path, "imports", self.setting("import_id"), "tasks", task_id, "dump"),
                         summary=f"failure dump of task {task_id}")
        return r.text

    def probe(self) -> None:
        self.request("GET", path(self.model_path, "files"), summary="probe")
