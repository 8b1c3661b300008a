"""Benchmarks (``kldm bench ...``): timed side by side in one run, never in unit tests."""
