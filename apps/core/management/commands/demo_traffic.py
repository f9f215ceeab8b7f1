import random
import time

import requests
from django.conf import settings
from django.core.management.base import BaseCommand

from apps.sandbox.traffic import Deliverer, make_opportunity, scenario_mix
from apps.sync.models import Connection


class Command(BaseCommand):
    help = "The sandbox CRMs deliver closed-won deals to Handoff: a burst, then a slow trickle (some bad)."

    def add_arguments(self, parser):
        parser.add_argument("--burst", type=int, default=36)
        parser.add_argument("--trickle", type=float, default=20, help="seconds between deals after the burst; 0 = stop")
        parser.add_argument("--seed", type=int, default=None)

    def _wait_for(self, url: str) -> None:
        for _ in range(120):
            try:
                if requests.get(url, timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)

    def handle(self, *args, burst, trickle, seed, **opts):
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
            self.stdout.write(f"delivered {scenario:<22} via {via:<10} → {[r.status_code for r in responses]}")
        while trickle > 0:
            time.sleep(trickle)
            scenario = rng.choice(["good"] * 3 + ["no_legal_entity", "unknown_terms", "bad_tax_id"])
            via = rng.choice(["hubspot", "hubspot", "salesforce"])
            try:
                r = d.deliver(make_opportunity(rng, scenario), via=via)
                self.stdout.write(f"delivered {scenario:<22} via {via:<10} → {r[0].status_code}")
            except requests.RequestException as exc:
                self.stdout.write(f"delivery failed ({exc}); trying again later")
