#!/usr/bin/env python
"""Writes tests/golden/golden_data.py: the golden data set's inputs AND its expected figures.

NOTE — why this script exists and how to treat it
- The expected values are computed HERE, independently of the code under test: this file imports nothing from
  Handoff (no apps.finance.pricing, no apps.finance.money, no apps.reconcile). It uses only Python's decimal with
  an explicit ROUND_HALF_UP, its own exchange-rate look-up and its own reading of the written rules
  (docs/money.md, "Rounding" and "Reconciliation"):
    time      amount = round_half_up(max(0, hours − written-off hours) × role rate), 0 when not billable or the
              task is "Internal meeting";
    expense   amount = round_half_up(spent × rate(spent currency → engagement currency, day incurred)
                                     × (1 + markup % / 100)), 0 when not billable; markup = the engagement's,
                                     else the policy default;
    base      base amount = round_half_up(amount × rate(engagement currency → legal entity base, day)),
              rate = the latest stored rate on or before the day, or 1 / (inverse pair's rate) rounded half up
              to 8 decimals when only the inverse pair is stored; same currency: rate 1 on the day itself;
    invoice   line = round_half_up(quantity × unit amount); total = Σ lines (never rounded again);
    reconciliation per engagement-month: see apps/reconcile/rules.py (written rules) — recomputed below.
- It was run ONCE (`.venv/bin/python tests/golden/make_golden.py`) and its output committed as literals.
  tests/finance/test_golden.py only reads those literals. Do not regenerate the file to make a failing test pass: a
  difference means the code and the written rules disagree — find out which one is wrong.
- The data are drawn from a seeded random generator (SEED), so a re-run writes the identical file.
- Several values are re-checked by hand in tests/finance/test_golden.py (HAND_CHECKED), arithmetic in the comments.
"""

from __future__ import annotations

import pprint
import random
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

SEED = 20261123
OUT = Path(__file__).with_name("golden_data.py")
CENT = Decimal("0.01")
RATE_Q = Decimal("0.00000001")
ZERO = Decimal("0.00")
TOLERANCE = Decimal("0.01")
POLICY_MARKUP = Decimal("2.50")  # FinancePolicy.default_expense_markup_pct for the data set
NON_BILLABLE_TASK = "Internal meeting"
MONTHS = [date(2026, m, 1) for m in range(5, 11)]  # the reconciled range: 2026-05 … 2026-10
RANGE_FROM, RANGE_TO = MONTHS[0], MONTHS[-1]
BASE = {"US01": "USD", "UK01": "GBP", "DE01": "EUR"}
# awkward rates on purpose: half-cent products (2.25 h × 312.50 = 703.125), repeating decimals (133.33, 98.33)
RATE_CARDS = {
    "USD": {"Partner": "450.00", "Manager": "312.50", "Senior Consultant": "212.75", "Consultant": "147.50",
            "Analyst": "98.33"},
    "GBP": {"Partner": "380.00", "Manager": "265.25", "Senior Consultant": "199.99", "Consultant": "133.33",
            "Analyst": "87.45"},
    "EUR": {"Partner": "420.00", "Manager": "295.50", "Senior Consultant": "225.25", "Consultant": "168.75",
            "Analyst": "112.50"},
}
HOURS = ["7.50", "0.33", "1.67", "2.25", "0.17", "0.50", "3.75", "8.00", "1.25", "0.08", "4.33", "6.67"]
# stored pairs (1 unit of the first = rate units of the second); GBP→EUR and EUR→USD exist only as inverses
RATE_BASE = {("EUR", "GBP"): Decimal("0.85423719"), ("USD", "GBP"): Decimal("0.78651204"),
             ("GBP", "USD"): Decimal("1.27143388"), ("USD", "EUR"): Decimal("0.92087615")}
PLAN = [("USD", "US01"), ("GBP", "UK01"), ("EUR", "DE01"), ("EUR", "UK01"), ("USD", "UK01"), ("GBP", "UK01"),
        ("USD", "US01"), ("EUR", "DE01")]
CONTRACTS = ["t_and_m", "milestone", "fixed_fee", "retainer"]
N_ENGAGEMENTS = 52


def r2(x: Decimal) -> Decimal:
    return x.quantize(CENT, rounding=ROUND_HALF_UP)


def add_months(d: date, n: int) -> date:
    y, m = divmod(d.month - 1 + n, 12)
    return date(d.year + y, m + 1, 1)


def month_end(m: date) -> date:
    return add_months(m, 1) - timedelta(days=1)


# ---------------------------------------------------------------- exchange rates


def make_rates() -> list[tuple[str, str, Decimal, date]]:
    rows = []
    for (a, b), base in RATE_BASE.items():
        for k, m in enumerate([date(2026, 4, 1)] + MONTHS + [date(2026, 11, 1)]):
            for day, step in ((1, 0), (16, 1)):
                rate = (base * (1 + Decimal(2 * k + step - 6) / Decimal(997))).quantize(RATE_Q, ROUND_HALF_UP)
                rows.append((a, b, rate, m.replace(day=day)))
    return rows


RATES = make_rates()


def rate(frm: str, to: str, on: date) -> tuple[Decimal, date]:
    """The ERP's rate for `on`: latest stored on or before it; else the inverse pair's, 1/r to 8 decimals."""
    if frm == to:
        return Decimal(1), on
    direct = [(d, r) for a, b, r, d in RATES if (a, b) == (frm, to) and d <= on]
    if direct:
        d, r = max(direct)
        return r, d
    inverse = [(d, r) for a, b, r, d in RATES if (a, b) == (to, frm) and d <= on]
    d, r = max(inverse)
    return (Decimal(1) / r).quantize(RATE_Q, ROUND_HALF_UP), d


def base_of(amount: Decimal, cur: str, base: str, on: date) -> dict:
    r, d = rate(cur, base, on)
    return {"base_currency": base, "base_amount": str(r2(amount * r)), "fx_rate": str(r), "fx_date": d.isoformat()}


# ---------------------------------------------------------------- the data set


def weekday_in(rng, m: date, lo: date, hi: date) -> date | None:
    days = [d for d in (m + timedelta(days=i) for i in range((month_end(m) - m).days + 1))
            if d.weekday() < 5 and lo <= d <= hi]
    return rng.choice(days) if days else None


def active_months(start: date, end: date | None) -> list[date]:
    return [m for m in MONTHS if start <= month_end(m) and (end is None or end >= m)]


def build() -> dict:
    rng = random.Random(SEED)
    engagements = []
    for i in range(N_ENGAGEMENTS):
        ctype = CONTRACTS[i % 4]
        k = i // 4  # index within the contract type: picks the deliberate discrepancy
        cur, le = PLAN[k % len(PLAN)]
        base = BASE[le]
        code = f"GLD-{i + 1:03d}"
        start = date(2026, rng.choice([4, 5, 6]), rng.randint(1, 28)) if ctype != "retainer" else \
            date(2026, rng.choice([3, 5, 6]), rng.choice([1, 10, 15, 20]))
        end = None if (ctype == "retainer" and k % 3 == 0) else date(2026, rng.choice([9, 10, 11]), rng.randint(1, 28))
        if ctype == "retainer" and k % 4 == 3:
            end = date(2026, 9, rng.choice([5, 30]))  # ended in September: an October invoice is billed after it
        fee = Decimal(rng.choice(["8333.33", "12500.00", "4166.67", "9999.99", "2750.50"])) if ctype == "retainer" \
            else None
        markup = rng.choice([None, None, Decimal("10.00"), Decimal("7.50"), Decimal("0.00")])
        value = Decimal(rng.choice(["100000.00", "87500.00", "64999.99", "120000.00", "45000.01"]))
        e = {"code": code, "contract_type": ctype, "currency": cur, "legal_entity": le, "contract_value": value,
             "start_date": start, "end_date": end, "retainer_fee": fee, "expense_markup_pct": markup,
             "time": [], "expenses": [], "milestones": [], "invoices": [], "revenue": []}
        months = active_months(start, end)
        effective_markup = markup if markup is not None else POLICY_MARKUP
        # -------- time and expenses (every contract type delivers effort; only T&M bills it)
        n = 0
        for m in months:
            lo, hi = max(start, m), min(end or month_end(m), month_end(m))
            for _ in range(rng.randint(2, 4)):
                d = weekday_in(rng, m, lo, hi)
                if d is None:
                    continue
                n += 1
                role = rng.choice(list(RATE_CARDS[cur]))
                hours = Decimal(rng.choice(HOURS))
                roll = rng.random()
                write_off = Decimal("0.50") if roll < 0.08 else (hours if roll < 0.10 else ZERO)
                billable = rng.random() >= 0.05
                task = NON_BILLABLE_TASK if rng.random() < 0.06 else rng.choice(["Design", "Build", "Workshop",
                                                                                  "Analysis", "Testing"])
                status = "reversed" if rng.random() < 0.05 else "posted"
                rate_card = Decimal(RATE_CARDS[cur][role])
                billable_hours = ZERO if (not billable or task == NON_BILLABLE_TASK) else max(ZERO, hours - write_off)
                amount = r2(billable_hours * rate_card)
                e["time"].append({"id": f"{code}-T{n:02d}", "role": role, "work_date": d, "hours": hours,
                                  "write_off_hours": write_off, "billable": billable, "task": task,
                                  "status": status,
                                  "expected": {"amount": str(amount), "rate": str(rate_card),
                                               "billable_hours": str(billable_hours), **base_of(amount, cur, base, d)}})
            if rng.random() < 0.7:
                d = weekday_in(rng, m, lo, hi)
                if d is not None:
                    n += 1
                    spent_cur = cur if rng.random() < 0.55 else rng.choice([c for c in RATE_CARDS if c != cur])
                    spent = Decimal(rng.randint(1000, 250000)) / 100
                    billable = rng.random() >= 0.1
                    fx, fx_date = rate(spent_cur, cur, d)
                    amount = r2(spent * fx * (1 + effective_markup / 100)) if billable else ZERO
                    e["expenses"].append({
                        "id": f"{code}-X{n:02d}", "category": rng.choice(["Travel", "Hotel", "Meals", "Software"]),
                        "incurred_on": d, "spent_amount": spent, "spent_currency": spent_cur, "billable": billable,
                        "status": "reversed" if rng.random() < 0.05 else "posted",
                        "expected": {"fx_in_rate": str(fx), "fx_in_date": fx_date.isoformat(),
                                     "markup_pct": str(effective_markup), "amount": str(amount),
                                     **base_of(amount, cur, base, d)}})
        if ctype == "t_and_m" and k % 3 == 0:  # November time: outside the reconciled range
            n += 1
            amount = r2(Decimal("2.00") * Decimal(RATE_CARDS[cur]["Analyst"]))
            d = date(2026, 11, 3)
            e["time"].append({"id": f"{code}-T{n:02d}", "role": "Analyst", "work_date": d, "hours": Decimal("2.00"),
                              "write_off_hours": ZERO, "billable": True, "task": "Build", "status": "priced",
                              "expected": {"amount": str(amount), "rate": RATE_CARDS[cur]["Analyst"],
                                           "billable_hours": "2.00", **base_of(amount, cur, base, d)}})
        billing(rng, e, k, months)
        engagements.append(e)
    return {"engagements": engagements}


def posted_by_month(e) -> dict[date, list]:
    out: dict[date, list] = {}
    for t in e["time"]:
        if t["status"] == "posted":
            out.setdefault(t["work_date"].replace(day=1), []).append(("time", t))
    for x in e["expenses"]:
        if x["status"] == "posted":
            out.setdefault(x["incurred_on"].replace(day=1), []).append(("expense", x))
    return out


def add_invoice(e, *, kind, period, issued_on, lines, status="open", milestone=None, set_period=True):
    cur, base = e["currency"], BASE[e["legal_entity"]]
    out_lines = []
    for desc, qty, unit in lines:
        out_lines.append({"description": desc, "quantity": qty, "unit_amount": unit,
                          "expected_amount": str(r2(qty * unit))})
    total = sum((Decimal(ln["expected_amount"]) for ln in out_lines), ZERO)
    n = len(e["invoices"]) + 1
    e["invoices"].append({"number": f"{e['code']}-INV{n:02d}", "kind": kind,
                          "period": period if set_period else None, "issued_on": issued_on, "status": status,
                          "milestone": milestone, "lines": out_lines,
                          "expected": {"total": str(total), **{("base_total" if k == "base_amount" else k): v for k, v
                                                              in base_of(total, cur, base, issued_on).items()}}})
    return total


def add_revenue(e, period, amount):
    e["revenue"].append({"period": period, "amount": amount})


def billing(rng, e, k, months):
    """Invoices and recognised revenue per contract type, each with its deliberate discrepancy (by k)."""
    ctype, cur = e["contract_type"], e["currency"]
    if ctype == "t_and_m":
        posted = posted_by_month(e)
        in_range = [m for m in sorted(posted) if RANGE_FROM <= m <= RANGE_TO]
        target = in_range[len(in_range) // 2] if in_range else None
        if k % 5 == 1 and target:  # the last posted line of one month was priced but never posted: leakage
            items = [it for it in posted[target] if it[0] == "time" and Decimal(it[1]["expected"]["amount"]) > 0]
            if items:
                items[-1][1]["status"] = "priced"
                posted = posted_by_month(e)
        for m in sorted(posted):
            lines = []
            for kind_, it in posted[m]:
                if kind_ == "time":
                    q, u = Decimal(it["expected"]["billable_hours"]), Decimal(it["expected"]["rate"])
                    if q:
                        lines.append((f"{it['role']} {it['work_date']} {it['task']}", q, u))
                elif Decimal(it["expected"]["amount"]):
                    lines.append((f"Expense {it['category']} {it['incurred_on']}", Decimal("1.00"),
                                  Decimal(it["expected"]["amount"])))
            if not lines:
                continue
            total = add_invoice(e, kind="time_and_expense", period=m, issued_on=add_months(m, 1) + timedelta(days=2),
                                lines=lines, status=rng.choice(["open", "paid"]))
            recognised = total
            if m == target and k % 5 == 2:
                recognised = total + Decimal("0.01")  # exactly at the tolerance: not an exception
            elif m == target and k % 5 == 3:
                recognised = total - Decimal("0.02")  # one cent above it: an exception
            elif m == target and k % 5 == 4:
                continue  # the ERP recognised nothing this month
            add_revenue(e, m, recognised)
    elif ctype == "milestone":
        shares = [Decimal("30.00"), Decimal("33.33"), Decimal("36.67")]
        amounts = [r2(e["contract_value"] * s / 100) for s in shares[:-1]]
        amounts.append(e["contract_value"] - sum(amounts))  # the last milestone takes the remainder
        due_months = sorted(rng.sample(MONTHS, 3))
        for j, (amount, m) in enumerate(zip(amounts, due_months)):
            due = m.replace(day=rng.randint(3, 25))
            e["milestones"].append({"name": f"Milestone {j + 1}", "amount": amount, "due_date": due,
                                    "status": "invoiced", "expected_amount": str(amount)})
            if k % 4 == 2 and j == 1:  # a voided first attempt, then the right invoice, same month
                add_invoice(e, kind="milestone", period=m, issued_on=due, lines=[(f"Milestone {j + 1} (wrong)",
                            Decimal("1.00"), amount + Decimal("100.00"))], status="void")
            add_invoice(e, kind="milestone", period=m, issued_on=due + timedelta(days=1),
                        lines=[(f"Milestone {j + 1}", Decimal("1.00"), amount)], status=rng.choice(["open", "paid"]),
                        milestone=j)
            if k % 4 == 1 and j == 2:
                continue  # not recognised yet: an exception
            add_revenue(e, m, amount - (Decimal("0.01") if k % 4 == 3 and j == 0 else ZERO))
    elif ctype == "fixed_fee":
        third = r2(e["contract_value"] / 3)
        amounts = [third, third, e["contract_value"] - 2 * third]
        for j, amount in enumerate(amounts):
            m = MONTHS[1 + j]
            issued = m.replace(day=rng.randint(2, 27))
            if k % 4 == 3 and j == 0:
                add_invoice(e, kind="fixed_fee", period=m, issued_on=issued, lines=[(
                    "Instalment 1 of 3 (duplicate)", Decimal("1.00"), amount)], status="void")
            add_invoice(e, kind="fixed_fee", period=m, issued_on=issued,
                        lines=[(f"Instalment {j + 1} of 3", Decimal("1.00"), amount)],
                        status=rng.choice(["open", "paid"]), set_period=(k % 3 != 0))  # no period: month issued
            if k % 4 == 1 and j == 1:
                add_revenue(e, add_months(m, 1), amount)  # recognised a month late: two months disagree
            elif k % 4 == 2 and j == 2:
                add_revenue(e, m, amount + Decimal("0.02"))
            else:
                add_revenue(e, m, amount)
    else:  # retainer
        fee, end = e["retainer_fee"], e["end_date"]
        inside = active_months(e["start_date"], end)
        skip = inside[len(inside) // 2] if inside else None
        for m in inside:
            if k % 4 == 1 and m == skip:
                add_revenue(e, m, fee)  # recognised, but the month's invoice is missing
                continue
            unit = fee + (Decimal("0.01") if k % 4 == 2 and m == skip else ZERO)  # a cent over: at the tolerance
            add_invoice(e, kind="retainer", period=m, issued_on=m + timedelta(days=1),
                        lines=[(f"Retainer {m:%Y-%m}", Decimal("1.00"), unit)], status=rng.choice(["open", "paid"]))
            add_revenue(e, m, fee)
        if k % 4 == 3:  # billed and recognised for October although the engagement ended in September
            m = date(2026, 10, 1)
            add_invoice(e, kind="retainer", period=m, issued_on=m + timedelta(days=1),
                        lines=[(f"Retainer {m:%Y-%m}", Decimal("1.00"), fee)], status="open")
            add_revenue(e, m, fee)


# ---------------------------------------------------------------- expected reconciliation (independent)


def overlaps(m: date, start: date | None, end: date | None) -> bool:
    return (start is None or start <= month_end(m)) and (end is None or end >= m)


def expected_reconciliation(e) -> dict:
    ctype = e["contract_type"]
    lines: dict[date, dict] = {}

    def at(m):
        return lines.setdefault(m, {"delivered": ZERO, "posted": ZERO, "invoiced": ZERO, "recognised": ZERO})

    for t in e["time"]:
        m = t["work_date"].replace(day=1)
        if t["status"] != "reversed" and RANGE_FROM <= m <= RANGE_TO:
            a = Decimal(t["expected"]["amount"])
            at(m)["delivered"] += a
            if t["status"] == "posted":
                at(m)["posted"] += a
    for x in e["expenses"]:
        m = x["incurred_on"].replace(day=1)
        if x["status"] != "reversed" and RANGE_FROM <= m <= RANGE_TO:
            a = Decimal(x["expected"]["amount"])
            at(m)["delivered"] += a
            if x["status"] == "posted":
                at(m)["posted"] += a
    for inv in e["invoices"]:
        m = (inv["period"] or inv["issued_on"]).replace(day=1)
        if inv["status"] != "void" and RANGE_FROM <= m <= RANGE_TO:
            at(m)["invoiced"] += Decimal(inv["expected"]["total"])
    for r in e["revenue"]:
        if RANGE_FROM <= r["period"] <= RANGE_TO:
            at(r["period"])["recognised"] += r["amount"]
    if ctype == "retainer":
        for m in active_months(e["start_date"], e["end_date"]):
            at(m)
    out = {}
    for m in sorted(lines):
        v = lines[m]
        billed = v["posted"] if ctype == "t_and_m" else v["invoiced"]
        expected = None
        if ctype == "retainer" and e["retainer_fee"] is not None:
            expected = e["retainer_fee"] if overlaps(m, e["start_date"], e["end_date"]) else ZERO
        figures = {"t_and_m": [v["delivered"], billed, v["recognised"]],
                   "retainer": [billed, v["recognised"]] + ([expected] if expected is not None else [])}.get(
            ctype, [billed, v["recognised"]])
        variance = max(figures) - min(figures)
        out[f"{m:%Y-%m}"] = {"delivered": str(v["delivered"]), "billed": str(billed),
                             "recognised": str(v["recognised"]),
                             "expected": None if expected is None else str(expected),
                             "variance": str(variance), "over_tolerance": variance > TOLERANCE}
    return out


# ---------------------------------------------------------------- writing the literals


def literal(obj):
    """Dates as ISO strings and Decimals as strings: the file holds plain literals only."""
    if isinstance(obj, dict):
        return {k: literal(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [literal(v) for v in obj]
    if isinstance(obj, (date, Decimal)):
        return str(obj)
    return obj


def fmt_engagement(e: dict) -> str:
    """One engagement: its fields one per line, each entry of its lists on one line (reviewable diffs)."""
    out = ["    {"]
    for key, value in e.items():
        if isinstance(value, list) and value and isinstance(value[0], dict):
            out.append(f"     {key!r}: [")
            out += [f"        {item!r}," for item in value]
            out.append("     ],")
        elif isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values()):
            out.append(f"     {key!r}: {{")
            out += [f"        {k!r}: {v!r}," for k, v in value.items()]
            out.append("     },")
        else:
            out.append(f"     {key!r}: {value!r},")
    out.append("    },")
    return "\n".join(out)


def main() -> None:
    data = build()
    for e in data["engagements"]:
        e["expected_reconciliation"] = expected_reconciliation(e)
    totals: dict[str, dict] = {}
    for e in data["engagements"]:
        t = totals.setdefault(e["currency"], {"lines": 0, "over_tolerance": 0, "delivered": ZERO, "billed": ZERO,
                                              "recognised": ZERO})
        for v in e["expected_reconciliation"].values():
            t["lines"] += 1
            t["over_tolerance"] += v["over_tolerance"]
            for f in ("delivered", "billed", "recognised"):
                t[f] += Decimal(v[f])
    header = ('"""The golden data set — GENERATED by tests/golden/make_golden.py (run once; see its docstring).\n\n'
              "Inputs and hand-independent expected figures, as literals (money as strings, exact). Do not edit by\n"
              'hand, and never regenerate to make a test pass."""\n\n'
              "# fmt: off\n")
    body = [
        f"SEED = {SEED}\n",
        f"RANGE = ({RANGE_FROM.isoformat()!r}, {RANGE_TO.isoformat()!r})\n",
        f"TOLERANCE = {str(TOLERANCE)!r}\n",
        f"POLICY_MARKUP_PCT = {str(POLICY_MARKUP)!r}\n",
        f"NON_BILLABLE_TASK = {NON_BILLABLE_TASK!r}\n",
        "RATE_CARDS = " + pprint.pformat(RATE_CARDS, width=118, sort_dicts=False) + "\n",
        "RATES = [\n" + "".join(f"    {tuple(literal(r))!r},\n" for r in RATES) + "]\n",
        "EXPECTED_TOTALS = " + pprint.pformat(literal(totals), width=118, sort_dicts=False) + "\n",
        "ENGAGEMENTS = [\n" + "\n".join(fmt_engagement(literal(e)) for e in data["engagements"]) + "\n]\n",
    ]
    OUT.write_text(header + "\n".join(body))
    n = len(data["engagements"])
    lines = sum(len(e["expected_reconciliation"]) for e in data["engagements"])
    over = sum(v["over_tolerance"] for e in data["engagements"] for v in e["expected_reconciliation"].values())
    print(f"wrote {OUT}: {n} engagements, {lines} engagement-months, {over} above the tolerance")


if __name__ == "__main__":
    main()
