"""The Anaplan sandbox's one workspace and model: the import definition Handoff feeds and running it.

Running an import parses the last complete file against the definition: the header must name the definition's
columns; each row must carry an engagement, an ISO currency, a period `YYYY-MM` inside the model's time range and
plain numbers. Rows that pass are written to the module (`SandboxObject` "actuals_row", one per engagement and
period); rows that fail are listed in the task result and in its failure dump.
"""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal, InvalidOperation

from ..models import SandboxObject

WORKSPACE_ID = "8a81b08e654f3cef0165a2b1f4d70ab2"
MODEL_ID = "75A40874E6B64FA3AE0743278996850F"
FILE_ID = "113000000042"
FILE_NAME = "handoff_actuals.csv"
IMPORT_ID = "112000000042"
IMPORT_NAME = "Engagement actuals from handoff_actuals.csv"
MODULE_NAME = "Engagement actuals"
# the import definition's columns, as the model's builder set them up
HEADER = ["Engagement", "Customer", "Contract Type", "Currency", "Period", "Approved Hours", "Billed",
          "Recognised Revenue", "Billed To Date", "Contract Value", "Backlog"]
NUMBER_COLUMNS = ["Approved Hours", "Billed", "Recognised Revenue", "Billed To Date", "Contract Value", "Backlog"]
DEFAULT_TIMESCALE = ("2020-01", "2035-12")


# ------------------------------------------------------------------ running the import

PERIOD = re.compile(r"(\d{4})-(0[1-9]|1[0-2])")
PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _row_problem(row: dict, timescale: tuple[str, str]) -> str:
    if not row["Engagement"].strip():
        return "Engagement is blank: the row names no list item"
    if not re.fullmatch(r"[A-Z]{3}", row["Currency"]):
        return f"Currency '{row['Currency']}' is not an ISO code"
    if not PERIOD.fullmatch(row["Period"]):
        return f"Period '{row['Period']}' is not a month (YYYY-MM)"
    if not (timescale[0] <= row["Period"] <= timescale[1]):
        return f"Period {row['Period']} is outside the model's time range {timescale[0]} to {timescale[1]}"
    for col in NUMBER_COLUMNS:
        value = row[col]
        if not PLAIN_NUMBER.fullmatch(value):
            return f"{col} '{value}' is not a number"
        try:
            Decimal(value)
        except InvalidOperation:
            return f"{col} '{value}' is not a number"
    return ""


def task_result(successful: bool, step: str, details: list[dict], dump_available: bool = False) -> dict:
    return {"currentStep": step, "dump": "", "result": {
        "details": details, "failureDumpAvailable": dump_available, "objectId": IMPORT_ID, "successful": successful}}


def run_import(content: str | None, cfg: dict) -> dict:
    """Import the file into the module: the task's currentStep and result (and the failure dump)."""
    if content is None:
        return task_result(False, "Failed.", [{"localMessageText": f"The source file {FILE_NAME} has not been uploaded",
                                           "occurrences": 0, "type": "fileNotFound", "values": []}])
    try:
        text = content.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return task_result(False, "Failed.", [{"localMessageText": f"{FILE_NAME} is not UTF-8 text", "occurrences": 0,
                                           "type": "invalidEncoding", "values": []}])
    rows = list(csv.reader(io.StringIO(text, newline="")))
    if not rows or rows[0] != HEADER:
        got = rows[0] if rows else []
        missing = [c for c in HEADER if c not in got] or ["(column order)"]
        return task_result(False, "Failed.", [{"localMessageText": f"The file's header does not match the import "
                                           f"definition: expected {', '.join(HEADER)}; missing {', '.join(missing)}",
                                           "occurrences": 0, "type": "headerMismatch", "values": []}])
    timescale = tuple((cfg.get("timescale") or DEFAULT_TIMESCALE)[:2])
    good, failures = {}, []
    for line, values in enumerate(rows[1:], start=2):
        if not any(v.strip() for v in values):
            continue
        if len(values) != len(HEADER):
            failures.append((line, values, f"Expected {len(HEADER)} columns, found {len(values)}"))
            continue
        row = dict(zip(HEADER, values))
        problem = _row_problem(row, timescale)
        if problem:
            failures.append((line, values, problem))
        else:
            good[f"{MODEL_ID}:{row['Engagement']}:{row['Period']}"] = row
    # write the module's cells: one object per engagement and period, replaced by each import
    SandboxObject.objects.filter(system="anaplan", object_type="actuals_row", external_key__in=list(good)).delete()
    SandboxObject.objects.bulk_create([SandboxObject(system="anaplan", object_type="actuals_row", external_key=k,
                                                     data=v) for k, v in good.items()], batch_size=5000)
    total = len(good) + len(failures)
    summary = {"localMessageText": f"{MODULE_NAME}: {total} ({len(good)}/{total}) rows successful, "
                                   f"{len(failures)} failed", "occurrences": 0,
               "type": "moduleRowsProcessedWithFailures" if failures else "moduleRowsProcessed",
               "values": ["moduleName", MODULE_NAME, "successRowCount", str(len(good)), "failedCount",
                          str(len(failures)), "ignoredCount", "0", "totalRowCount", str(total)]}
    details = [summary] + [{"localMessageText": f"Line {line}: {problem}", "occurrences": 1,
                            "type": "rowFailure", "values": ["line", str(line)]} for line, _, problem in failures[:20]]
    out = task_result(not failures, "Complete.", details, dump_available=bool(failures))
    if failures:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\r\n")
        writer.writerow(["_Line_", "_Error_1_", *HEADER])
        for line, values, problem in failures:
            writer.writerow([line, problem, *values])
        out["dump"] = buf.getvalue()
    return out
