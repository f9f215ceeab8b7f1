"""Kantata stories (milestones are stories with story_type "milestone"): `GET/POST /api/v1/stories.json`,
`GET/PUT /api/v1/stories/<id>.json`. Setting a milestone's state to "completed" sends Kantata's signed
`story.completed` callback to Handoff (apps/sandbox/callbacks.py); `complete_milestone` is a project manager
doing so in the PSA (tests and demo traffic).
"""

from __future__ import annotations

import json

from django.db import transaction
from django.db.models import F

from ..callbacks import send_callback
from ..faults import error, json_response
from ..http import now_text
from ..models import SandboxObject


def _story_json(obj: SandboxObject) -> dict:
    return {"id": str(obj.pk), **obj.data}


def _story_list(objs) -> dict:
    return {"count": len(objs), "results": [{"key": "stories", "id": str(o.pk)} for o in objs],
            "stories": {str(o.pk): _story_json(o) for o in objs},
            "meta": {"count": len(objs), "page_count": 1, "page_number": 1, "page_size": 20}}


STORY_FIELDS = ("title", "workspace_id", "story_type", "state", "price", "budget_estimate_in_cents", "currency",
                "due_date", "description")


def save_story(fields: dict, story_id: str | int | None = None) -> tuple[SandboxObject, bool]:
    """Create or update a Kantata story; returns (story, just_completed)."""
    now = now_text()
    with transaction.atomic():
        if story_id is None:
            obj = SandboxObject.objects.create(system="kantata", object_type="story",
                                               data={"state": "not started", "story_type": "task",
                                                     "created_at": now})
            before = None
        else:
            obj = SandboxObject.objects.select_for_update().get(system="kantata", object_type="story", pk=int(story_id))
            before = obj.data.get("state")
        obj.data.update({k: fields[k] for k in STORY_FIELDS if k in fields})
        obj.data["updated_at"] = now
        done = obj.data.get("state") == "completed" and before != "completed"
        if done:
            obj.data["completed_at"] = now
        if story_id is not None:
            obj.writes = F("writes") + 1
        obj.save()
        obj.refresh_from_db()
    return obj, done and obj.data.get("story_type") == "milestone"


def stories(request, match):
    story_id = match.group(1)
    if request.method == "GET":
        if story_id:
            obj = SandboxObject.objects.filter(system="kantata", object_type="story", pk=int(story_id)).first()
            if obj is None:
                return error("kantata", 404, f"Story {story_id} not found", "not_found")
            return json_response(_story_list([obj]))
        qs = SandboxObject.objects.filter(system="kantata", object_type="story").order_by("pk")
        if request.GET.get("workspace_id"):
            qs = qs.filter(data__workspace_id=request.GET["workspace_id"])
        return json_response(_story_list(list(qs[:200])))
    if request.method not in ("POST", "PUT"):
        return error("kantata", 405, "Method not allowed", "method")
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return error("kantata", 400, "Malformed JSON body", "parameter")
    story = body.get("story") if isinstance(body, dict) else None
    if not isinstance(story, dict):
        return error("kantata", 400, "story is required", "parameter")
    if request.method == "POST" and (story_id or not (story.get("title") or "").strip()):
        return error("kantata", 422, "Title can't be blank", "validation", "title")
    if request.method == "POST" and not story.get("workspace_id"):
        return error("kantata", 422, "Workspace can't be blank", "validation", "workspace_id")
    if request.method == "PUT" and not story_id:
        return error("kantata", 404, "No route matches", "not_found")
    if story_id and not SandboxObject.objects.filter(system="kantata", object_type="story", pk=int(story_id)).exists():
        return error("kantata", 404, f"Story {story_id} not found", "not_found")
    obj, completed = save_story(story, story_id)
    if completed:
        publish_story_completed(_story_json(obj))
    return json_response(_story_list([obj]))


def publish_story_completed(story: dict, *, msg_id: str | None = None) -> dict:
    """Send (or hold) Kantata's signed story.completed callback for a milestone story."""
    return send_callback("story.completed", story, system="kantata", msg_id=msg_id)


def complete_milestone(story_id: str | int) -> dict:
    """Mark a milestone story completed in the PSA (as a project manager does); the callback goes to Handoff."""
    obj, completed = save_story({"state": "completed"}, story_id)
    story = _story_json(obj)
    if completed:
        publish_story_completed(story)
    return story
