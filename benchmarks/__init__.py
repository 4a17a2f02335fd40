"""Benchmarks of oversip-hooks against its baselines: ``python -m benchmarks``.

Every figure is a ratio against a baseline measured in the same run; see ``_measure``
for how, and RESULTS.md for the latest figures.
"""
