"""Benchmarks: scripts that print tables and write JSON under ``bench/results/`` (never part of the tests).

A package so that the scripts share their helpers (``bench.machine``, ``bench.node_bench``) by import;
``scripts/in-env`` puts the repository root on the path, so ``python bench/<script>.py`` finds them.
"""
