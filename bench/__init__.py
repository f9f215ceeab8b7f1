"""Benchmarks (`.venv/bin/python bench/run.py`); see docs/benchmarks.md."""
