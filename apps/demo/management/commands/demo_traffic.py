import random
import time

import requests
from django.conf import settings
from django.core.management.base import BaseCommand

from apps.core.resilience import run_forever
from apps.demo.deals import Deliverer, make_opportunity, scenario_mix
from apps.demo.finance_plan import poll_settle
from apps.demo.finance_traffic import FinanceTraffic
from apps.sync.models import Connection


class Command(BaseCommand):
    help = ("The sandbox systems send live traffic to Handoff: closed-won deals from the CRMs (a burst, then a slow "
            "trickle, some bad), and the delivery-to-cash traffic on deals won at start-up — approved time and "
            "expenses, completed milestones, Stripe and NetSuite payments, disputes, change orders, with every hold "
            "reason (apps/demo/finance_traffic.py).")

    def add_arguments(self, parser):
        parser.add_argument("--burst", type=int, default=36, help="closed-won deals delivered at start")
        parser.add_argument("--trickle", type=float, default=20, help="seconds between deals after the burst; 0 = stop")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--no-finance", action="store_true",
                            help="deals only: no time, expenses, milestones, payments or change orders")
        parser.add_argument("--finance-trickle", type=float, default=15,
                            help="seconds between delivery-to-cash items after their burst; 0 = none")
        parser.add_argument("--finance-wait", type=float, default=120,
                            help="seconds to wait for the workers at each step of the delivery-to-cash burst")

    def _wait_for(self, url: str) -> None:
        for _ in range(120):
            try:
                if requests.get(url, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)

    def say(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()

    def handle(self, *args, burst, trickle, seed, no_finance, finance_trickle, finance_wait, **opts):
        rng = random.Random(seed)
        hs = Connection.objects.get(slug="hubspot")
        sf = Connection.objects.get(slug="salesforce")
        d = Deliverer(handoff_url=settings.HANDOFF_PUBLIC_URL, sandbox_url=settings.HANDOFF_SANDBOX_URL,
                      hubspot_secret=hs.inbound_secret, salesforce_org=sf.organization_id)
        self._wait_for(settings.HANDOFF_PUBLIC_URL + "/healthz")
        self._wait_for(settings.HANDOFF_SANDBOX_URL + "/healthz")
        for i, scenario in enumerate(scenario_mix(burst, rng)):
            via = "hubspot" if i % 3 else "salesforce"
            # every fifth deal is delivered twice, as CRMs do: Handoff must process it once
            responses = d.deliver(make_opportunity(rng, scenario), via=via, times=2 if i % 5 == 0 else 1)
            self.say(f"delivered {scenario:<22} via {via:<10} → {[r.status_code for r in responses]}")

        finance = None
        if not no_finance:
            finance = FinanceTraffic(d, handoff_url=settings.HANDOFF_PUBLIC_URL,
                                     sandbox_url=settings.HANDOFF_SANDBOX_URL,
                                     settle=poll_settle(finance_wait, say=self.say),
                                     rng=random.Random(rng.random()), say=self.say)
            try:
                finance.burst()
            except (requests.RequestException, OSError) as exc:  # a sandbox or Handoff went away meanwhile
                self.say(f"delivery-to-cash burst cut short ({exc}); the trickle carries on")
            if not finance.targets:
                finance = None

        # the two trickles, interleaved: the next deal and the next delivery-to-cash item, each on its own clock
        now = time.monotonic()
        next_deal = now + trickle if trickle > 0 else None
        next_item = now + finance_trickle if finance and finance_trickle > 0 else None
        while next_deal is not None or next_item is not None:
            due = min(t for t in (next_deal, next_item) if t is not None)
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if next_deal is not None and next_deal <= time.monotonic():
                    next_deal += trickle
                    scenario = rng.choice(["good"] * 3 + ["no_legal_entity", "unknown_terms", "bad_tax_id"])
                    via = rng.choice(["hubspot", "hubspot", "salesforce"])
                    r = d.deliver(make_opportunity(rng, scenario), via=via)
                    self.say(f"delivered {scenario:<22} via {via:<10} → {r[0].status_code}")
                if next_item is not None and next_item <= time.monotonic():
                    next_item += finance_trickle
                    run_forever(finance.tick, what="demo traffic")
            except requests.RequestException as exc:
                self.say(f"delivery failed ({exc}); trying again later")
