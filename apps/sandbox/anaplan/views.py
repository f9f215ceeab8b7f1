"""The Anaplan sandbox: the Integration API v2 bulk endpoints Handoff uses, with Anaplan's shapes.

One workspace and model, holding one import definition ("Engagement actuals from handoff_actuals.csv") whose
source is one file. A file is uploaded whole (`PUT files/{id}`) or in chunks (`POST files/{id}` → `PUT
files/{id}/chunks/{n}` → `POST files/{id}/complete`). Running the import (`POST imports/{id}/tasks`) parses the
last complete file against the import definition: the header must name the definition's columns; each row must
carry an engagement, an ISO currency, a period `YYYY-MM` inside the model's time range and plain numbers. Rows
that pass are written to the module (`SandboxObject` "actuals_row", one per engagement and period); rows that fail
are listed in the task result and in its failure dump (`…/tasks/{taskId}/dump`). The task reports IN_PROGRESS
for `task_polls` GETs (sandbox setting, default 1), then COMPLETE — so a client has to poll.

Sandbox settings (`SandboxSystem("anaplan").settings`): {"timescale": ["2020-01", "2035-12"], "task_polls": 1,
"fail_next_tasks": 0} — the last makes the next N import tasks fail as Anaplan's do when the model is busy.
Auth: `Authorization: AnaplanAuthToken <token>` (or `Bearer <token>`, which Anaplan also accepts); fault
injection as for every sandbox (faults.check), answered in Anaplan's error shape `{"status": {code, message}}`.
"""

from __future__ import annotations

import json
import re
import time
import uuid

from django.db import transaction
from django.http import HttpResponse

from ..faults import check, json_response, system_config
from ..http import sandbox_view
from ..models import SandboxObject, SandboxSystem
from .model import FILE_ID, FILE_NAME, HEADER, IMPORT_ID, IMPORT_NAME, MODEL_ID, WORKSPACE_ID, run_import, task_result

SCHEMA = "https://api.anaplan.com/2/0/models/{model}/objects/{kind}"


# ------------------------------------------------------------------ shapes


def ok(key: str, obj, status: int = 200) -> HttpResponse:
    return json_response({"meta": {"schema": SCHEMA.format(model=MODEL_ID, kind=key.rstrip("s"))},
                          "status": {"code": status, "message": "Success"}, key: obj}, status)


def fail(status: int, message: str, headers=None) -> HttpResponse:
    return json_response({"status": {"code": status, "message": message}}, status, headers)


def no_content() -> HttpResponse:
    return HttpResponse(status=204)


def _file_meta(obj: SandboxObject | None) -> dict:
    data = obj.data if obj else {}
    return {"id": FILE_ID, "name": FILE_NAME, "chunkCount": data.get("chunkCount", 0), "delimiter": "\"",
            "encoding": "UTF-8", "firstDataRow": 2, "format": "txt", "headerRow": 1, "separator": ","}


def _import_meta() -> dict:
    return {"id": IMPORT_ID, "name": IMPORT_NAME, "importDataSourceId": FILE_ID, "importType": "MODULE_DATA"}


# ------------------------------------------------------------------ auth and faults


def _as_bearer(request) -> None:
    """faults.check knows `Bearer <token>`: present Anaplan's `AnaplanAuthToken <token>` to it that way."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme == "AnaplanAuthToken":
        request.META["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        request.__dict__.pop("headers", None)  # HttpRequest.headers is cached


def _anaplan_shaped(denied: HttpResponse) -> HttpResponse:
    try:
        message = json.loads(denied.content).get("error") or "Error"
    except (ValueError, AttributeError):
        message = "Error"
    retry = {"Retry-After": denied["Retry-After"]} if denied.has_header("Retry-After") else None
    return fail(denied.status_code, message, retry)


# ------------------------------------------------------------------ the view

ROUTE = re.compile(r"2/0/workspaces/(?P<ws>[\w-]+)/models/(?P<model>[\w-]+)/(?P<rest>.+?)/?")


@sandbox_view
def anaplan(request, path: str):
    _as_bearer(request)
    if (denied := check(request, "anaplan")) is not None:
        return _anaplan_shaped(denied)
    m = ROUTE.fullmatch(path)
    if not m:
        return fail(404, f"Resource not found: /{path}")
    if m.group("ws") != WORKSPACE_ID:
        return fail(404, f"Workspace {m.group('ws')} not found")
    if m.group("model") != MODEL_ID:
        return fail(404, f"Model {m.group('model')} not found")
    rest, method = m.group("rest"), request.method
    for pattern, methods, handler in ROUTES:
        if (match := pattern.fullmatch(rest)) is not None:
            if method not in methods:
                return fail(405, "Method Not Allowed")
            return handler(request, **match.groupdict())
    return fail(404, f"Resource not found: /{path}")


# ------------------------------------------------------------------ files


def _file(lock: bool = False) -> SandboxObject | None:
    qs = SandboxObject.objects.filter(system="anaplan", object_type="file", external_key=f"{MODEL_ID}:{FILE_ID}")
    return (qs.select_for_update() if lock else qs).first()


def _check_file(file_id: str) -> HttpResponse | None:
    return None if file_id == FILE_ID else fail(404, f"File {file_id} not found")


def files(request):
    return ok("files", [_file_meta(_file())])


def file(request, file_id: str):
    if (missing := _check_file(file_id)) is not None:
        return missing
    if request.method == "GET":  # the file's content (Anaplan serves an import file's data here)
        obj = _file()
        if obj is None or not obj.data.get("complete"):
            return fail(404, f"File {file_id} has no content")
        return HttpResponse(obj.data["content"].encode("latin-1"), content_type="application/octet-stream")
    if request.method == "POST":  # start a chunked upload
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return fail(400, "Malformed JSON body")
        count = body.get("chunkCount") if isinstance(body, dict) else None
        if not isinstance(count, int) or (count < 1 and count != -1):
            return fail(400, "chunkCount must be -1 (unknown) or the number of chunks")
        with transaction.atomic():
            obj = _file(lock=True) or SandboxObject(system="anaplan", object_type="file",
                                                    external_key=f"{MODEL_ID}:{FILE_ID}", data={}, writes=0)
            obj.data = {**obj.data, "chunks": {}, "chunkCount": count, "uploading": True}
            obj.writes += 1
            obj.save()
        return ok("file", _file_meta(obj))
    # PUT: the whole file in one request
    with transaction.atomic():
        obj = _file(lock=True) or SandboxObject(system="anaplan", object_type="file",
                                                external_key=f"{MODEL_ID}:{FILE_ID}", data={}, writes=0)
        obj.data = {**obj.data, "chunks": {}, "chunkCount": 1, "uploading": False, "complete": True,
                    "content": request.body.decode("latin-1"), "uploads": obj.data.get("uploads", 0) + 1}
        obj.writes += 1
        obj.save()
    return no_content()


def chunks(request, file_id: str):
    if (missing := _check_file(file_id)) is not None:
        return missing
    obj = _file()
    names = sorted((obj.data.get("chunks") or {}) if obj else {}, key=int)
    return ok("chunks", [{"id": n, "name": f"Chunk {n}"} for n in names])


def chunk(request, file_id: str, n: str):
    if (missing := _check_file(file_id)) is not None:
        return missing
    if request.method == "GET":
        obj = _file()
        part = ((obj.data.get("chunks") or {}) if obj else {}).get(n)
        if part is None:
            return fail(404, f"Chunk {n} not found")
        return HttpResponse(part.encode("latin-1"), content_type="application/octet-stream")
    with transaction.atomic():
        obj = _file(lock=True)
        if obj is None or not obj.data.get("uploading"):
            return fail(400, "No upload is in progress for this file: POST files/{fileId} first")
        count = obj.data.get("chunkCount", -1)
        if count != -1 and int(n) >= count:
            return fail(400, f"Chunk {n} is beyond the declared chunkCount {count}")
        obj.data["chunks"][n] = request.body.decode("latin-1")  # bytes kept 1:1 (a chunk may split a character)
        obj.save(update_fields=["data", "updated_at"])
    return no_content()


def complete(request, file_id: str):
    if (missing := _check_file(file_id)) is not None:
        return missing
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return fail(400, "Malformed JSON body")
    count = body.get("chunkCount") if isinstance(body, dict) else None
    with transaction.atomic():
        obj = _file(lock=True)
        if obj is None or not obj.data.get("uploading"):
            return fail(400, "No upload is in progress for this file")
        parts = obj.data.get("chunks") or {}
        if not isinstance(count, int) or count < 1:
            return fail(400, "chunkCount must be the number of chunks uploaded")
        missing_parts = [str(i) for i in range(count) if str(i) not in parts]
        if missing_parts:
            return fail(400, f"Chunks {', '.join(missing_parts[:5])} of {count} were not uploaded")
        obj.data = {**obj.data, "content": "".join(parts[str(i)] for i in range(count)), "chunkCount": count,
                    "chunks": {}, "uploading": False, "complete": True, "uploads": obj.data.get("uploads", 0) + 1}
        obj.save()
    return ok("file", _file_meta(obj))


# ------------------------------------------------------------------ imports


def imports(request):
    return ok("imports", [_import_meta()])


def import_definition(request, import_id: str):
    if import_id != IMPORT_ID:
        return fail(404, f"Import {import_id} not found")
    return ok("importMetadata", {**_import_meta(), "type": "FILE", "source": {
        "textEncoding": "UTF-8", "columnSeparator": ",", "textDelimiter": "\"", "headerRow": 1, "firstDataRow": 2,
        "decimalSeparator": ".", "headerNames": HEADER, "columnCount": len(HEADER)}})


def _task(task_id: str, lock: bool = False) -> SandboxObject | None:
    qs = SandboxObject.objects.filter(system="anaplan", object_type="import_task", external_key=task_id)
    return (qs.select_for_update() if lock else qs).first()


def tasks(request, import_id: str):
    if import_id != IMPORT_ID:
        return fail(404, f"Import {import_id} not found")
    if request.method == "GET":
        objs = SandboxObject.objects.filter(system="anaplan", object_type="import_task").order_by("pk")
        return ok("tasks", [{"taskId": o.external_key, "taskState": o.data["taskState"],
                             "creationTime": o.data["creationTime"]} for o in objs])
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return fail(400, "Malformed JSON body")
    if not isinstance(body, dict) or not body.get("localeName"):
        return fail(400, "localeName is required")
    task_id = uuid.uuid4().hex.upper()
    system_config("anaplan")
    with transaction.atomic():
        system = SandboxSystem.objects.select_for_update().get(system="anaplan")
        cfg = system.settings or {}
        source = _file(lock=True)
        if cfg.get("fail_next_tasks"):  # the model is busy: the task runs and fails without importing anything
            system.settings = {**cfg, "fail_next_tasks": int(cfg["fail_next_tasks"]) - 1}
            system.save(update_fields=["settings"])
            result = task_result(False, "Failed.", [{"localMessageText": "The model is locked by another process; run "
                                                 "the import again later", "occurrences": 0, "type": "modelLocked",
                                                 "values": []}])
        else:
            result = run_import(source.data.get("content") if source and source.data.get("complete") else None,
                                cfg)
        SandboxObject.objects.create(system="anaplan", object_type="import_task", external_key=task_id, data={
            "importId": import_id, "taskState": "NOT_STARTED", "creationTime": int(time.time() * 1000),
            "pollsLeft": int(cfg.get("task_polls", 1)), **result})
    return ok("task", {"taskId": task_id, "taskState": "NOT_STARTED"})


def task(request, import_id: str, task_id: str):
    if import_id != IMPORT_ID:
        return fail(404, f"Import {import_id} not found")
    with transaction.atomic():
        obj = _task(task_id, lock=True)
        if obj is None:
            return fail(404, f"Task {task_id} not found")
        d = obj.data
        if d["pollsLeft"] > 0:
            d["pollsLeft"] -= 1
            d["taskState"] = "IN_PROGRESS"
            obj.save(update_fields=["data", "updated_at"])
            return ok("task", {"type": "taskInformation", "taskId": task_id, "taskState": "IN_PROGRESS",
                               "currentStep": "Importing data.", "progress": 0.5, "creationTime": d["creationTime"]})
        d["taskState"] = "COMPLETE"
        obj.save(update_fields=["data", "updated_at"])
    return ok("task", {"type": "taskInformation", "taskId": task_id, "taskState": "COMPLETE",
                       "currentStep": d["currentStep"], "progress": 1.0, "result": d["result"],
                       "creationTime": d["creationTime"]})


def dump(request, import_id: str, task_id: str):
    obj = _task(task_id) if import_id == IMPORT_ID else None
    if obj is None or obj.data.get("taskState") != "COMPLETE" or not obj.data["result"].get("failureDumpAvailable"):
        return fail(404, f"No failure dump for task {task_id}")
    return HttpResponse(obj.data["dump"].encode("utf-8"), content_type="text/csv")


ROUTES = [
    (re.compile(r"files"), ("GET",), files),
    (re.compile(r"files/(?P<file_id>\d+)"), ("GET", "POST", "PUT"), file),
    (re.compile(r"files/(?P<file_id>\d+)/chunks"), ("GET",), chunks),
    (re.compile(r"files/(?P<file_id>\d+)/chunks/(?P<n>\d+)"), ("GET", "PUT"), chunk),
    (re.compile(r"files/(?P<file_id>\d+)/complete"), ("POST",), complete),
    (re.compile(r"imports"), ("GET",), imports),
    (re.compile(r"imports/(?P<import_id>\d+)"), ("GET",), import_definition),
    (re.compile(r"imports/(?P<import_id>\d+)/tasks"), ("GET", "POST"), tasks),
    (re.compile(r"imports/(?P<import_id>\d+)/tasks/(?P<task_id>\w+)"), ("GET",), task),
    (re.compile(r"imports/(?P<import_id>\d+)/tasks/(?P<task_id>\w+)/dump"), ("GET",), dump),
]
