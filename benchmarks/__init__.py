"""Benchmarks: every store operation timed against a physical baseline measured in the same run.

``python -m benchmarks.run [--quick]`` (``make bench [QUICK=1]``) generates msprime data (cached in
``benchmarks/.cache/``), runs each operation in a fresh subprocess several times, prints a table
(operation, median, baseline, ratio, peak RSS) and writes it to ``docs/benchmarks.md``.
"""
