"""Suites: every registered model through its adapter; fixtures come from harness/plugin.py.

Select models with --nm-models (default: the registry's default set; 'all'; 'family:t5'; or names).
Every test uses pytest-benchmark's `benchmark` fixture, so `pytest suites/ --benchmark-only` runs all five.
"""
