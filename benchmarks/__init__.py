"""Benchmarks of captioning, each run from the repository root as ``python -m benchmarks.NAME``.

Every benchmark runs through `benchmarks.harness` and writes one JSON record per run into ``benchmarks/results/``;
``python -m benchmarks.page`` builds docs/benchmarks.md from the latest valid records.
"""
