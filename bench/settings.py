"""Benchmark settings: the demo's settings (config.settings.local) plus the bare DRF baseline endpoint.

Run with DEBUG=0 LOG_LEVEL=WARNING HANDOFF_SANDBOX_ENABLED=1 (bench/run.py sets them for every process it starts).
"""

from config.settings.local import *  # noqa: F401,F403

ROOT_URLCONF = "bench.urls"
