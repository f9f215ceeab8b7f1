"""What a finished Anaplan import task says, in Handoff's one shape (the workflow records and shows it)."""

from __future__ import annotations

import json


def task_summary(task: dict) -> dict:
    """What a finished import task says, in one shape: ok, rows (ok/failed/total), messages."""
    result = task.get("result") or {}
    details = result.get("details") or []
    messages = [str(d.get("localMessageText", "")).strip() for d in details if d.get("localMessageText")]
    counts = {}
    for d in details:
        values = d.get("values") or []
        counts.update({str(values[i]): values[i + 1] for i in range(0, len(values) - 1, 2)})

    def count(name):
        try:
            return int(counts.get(name))
        except (TypeError, ValueError):
            return None

    failed = count("failedCount") or 0
    ok = (task.get("taskState") == "COMPLETE" and bool(result.get("successful")) and failed == 0
          and not result.get("failureDumpAvailable"))
    return {"ok": ok, "state": task.get("taskState", ""), "step": task.get("currentStep", ""),
            "rows_ok": count("successRowCount"), "rows_failed": failed, "rows_total": count("totalRowCount"),
            "messages": messages, "dump_available": bool(result.get("failureDumpAvailable")),
            "raw": json.loads(json.dumps(result, default=str))}
