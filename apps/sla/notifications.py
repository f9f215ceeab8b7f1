"""Telling the owner team that records crossed an SLA threshold: one e-mail per team per evaluation run (to the
active members of the team's group that have an e-mail address), and one Slack-compatible webhook post per run
if HANDOFF_SLA_WEBHOOK_URL is set. Which records are "newly crossed" is decided (and claimed, so never twice)
by services.evaluate; this module only words and sends. Failures are logged, never raised: the next state
change of a record is still notified."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime

import requests
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.urls import NoReverseMatch, reverse

from apps.sync.models import SyncRecord
from apps.sync.workflows.catalog import all_workflows

log = logging.getLogger("handoff.sla")

MAX_LISTED = 50  # records listed per team and message; the rest are counted
STATE_LABEL = {"breached": "BREACHED", "due_soon": "due soon"}


def _team_label(team: str) -> str:
    try:
        return SyncRecord.Team(team).label
    except ValueError:
        return team or "(no team)"


def _workflow_label(name: str) -> str:
    labels = {wf.name: wf.label for wf in all_workflows()}
    return labels.get(name, name.replace("_", " ").capitalize())


def _record_url(pk: int) -> str:
    try:
        path = reverse("console:record", args=[pk])
    except NoReverseMatch:
        path = f"/records/{pk}/"
    return settings.HANDOFF_PUBLIC_URL.rstrip("/") + path


def _relative(due: datetime | None, now: datetime) -> str:
    if due is None:
        return ""
    minutes = int(abs((due - now).total_seconds()) // 60)
    h, m = divmod(minutes, 60)
    d, h = divmod(h, 24)
    span = " ".join(part for part in (f"{d} d" if d else "", f"{h} h" if h else "", f"{m} min") if part)
    return f"overdue by {span}" if due <= now else f"due in {span}"


def team_recipients(teams) -> dict[str, list[str]]:
    """Active users of each team's group that have an e-mail address (one query)."""
    Through = get_user_model().groups.through
    out: dict[str, list[str]] = defaultdict(list)
    rows = (Through.objects.filter(group__name__in=list(teams), user__is_active=True).exclude(user__email="")
            .values_list("group__name", "user__email").order_by("group__name", "user__email").distinct())
    for team, email in rows:
        out[team].append(email)
    return out


def _line(rec: dict, state: str, due, now: datetime, with_link: bool = True) -> str:
    title = rec.get("title") or f"record {rec['id']}"
    held = f" · {rec['reason_code']}" if rec.get("reason_code") else ""
    when = f", {_relative(due, now)} (due {due:%Y-%m-%d %H:%M} UTC)" if due else ""
    text = (f"#{rec['id']} {title} — {_workflow_label(rec['workflow'])}, stage {rec['stage']} ({rec['status']}{held})"
            f", P{rec['priority']}: {STATE_LABEL.get(state, state)}{when}")
    return text + (f"\n    {_record_url(rec['id'])}" if with_link else "")


def notify_crossed(crossed: dict[int, tuple[str, str, datetime | None]], *, now: datetime) -> dict:
    """crossed: record id -> (owner team, new state, due). Returns {"emails": n, "webhooks": n}."""
    by_team: dict[str, list[tuple[int, str, datetime | None]]] = defaultdict(list)
    for pk, (team, state, due) in crossed.items():
        by_team[team].append((pk, state, due))
    far = datetime.max.replace(tzinfo=now.tzinfo)
    for items in by_team.values():
        items.sort(key=lambda x: (x[1] != "breached", x[2] or far, x[0]))
    listed_ids = [pk for items in by_team.values() for pk, _, _ in items[:MAX_LISTED]]
    details = {r["id"]: r for r in SyncRecord.objects.filter(pk__in=listed_ids).values(
        "id", "workflow", "stage", "status", "priority", "title", "reason_code")}
    recipients = team_recipients(by_team)

    emails = 0
    summaries = []
    for team in sorted(by_team):
        items = by_team[team]
        n_breached = sum(1 for _, s, _ in items if s == "breached")
        n_soon = len(items) - n_breached
        parts = [f"{n_breached} breached" if n_breached else "", f"{n_soon} due soon" if n_soon else ""]
        headline = " and ".join(p for p in parts if p)
        label = _team_label(team)
        lines = [_line(details[pk], state, due, now) for pk, state, due in items[:MAX_LISTED] if pk in details]
        more = len(items) - len(lines)
        body = "\n".join([
            f"{label}: {headline} since the last check ({now:%Y-%m-%d %H:%M} UTC).", "",
            *lines,
            *([f"…and {more} more (see the exception desk)."] if more > 0 else []),
            "", "Sent by Handoff once per SLA threshold a record crosses.",
        ])
        summaries.append((label, headline, items, more))
        to = recipients.get(team, [])
        if not to:
            log.warning("SLA: %s records crossed a threshold for team %s, but no active member has an e-mail",
                        len(items), team)
            continue
        try:
            send_mail(f"[Handoff] SLA: {headline} — {label}", body, None, to)
            emails += 1
        except Exception:
            log.exception("SLA: e-mail to team %s failed", team)

    webhooks = 0
    url = getattr(settings, "HANDOFF_SLA_WEBHOOK_URL", "")
    if url:
        text_lines = []
        for label, headline, items, more in summaries:
            text_lines.append(f"*{label}*: {headline}")
            for pk, state, due in items[:10]:
                if pk in details:
                    text_lines.append("• " + _line(details[pk], state, due, now, with_link=False)
                                      + f" <{_record_url(pk)}|open>")
            if len(items) > 10:
                text_lines.append(f"…and {len(items) - 10} more")
        webhooks = post_webhook(url, "Handoff SLA alert\n" + "\n".join(text_lines))
    return {"emails": emails, "webhooks": webhooks}


def post_webhook(url: str, text: str) -> int:
    """POST {"text": …} (Slack incoming-webhook format). Returns 1 if accepted, 0 if it failed (logged)."""
    try:
        resp = requests.post(url, json={"text": text},
                             timeout=getattr(settings, "HANDOFF_SLA_WEBHOOK_TIMEOUT", 5))
        if resp.status_code >= 400:
            log.warning("SLA webhook answered %s: %s", resp.status_code, resp.text[:200])
            return 0
        return 1
    except requests.RequestException as exc:
        log.warning("SLA webhook failed: %s", exc)
        return 0
