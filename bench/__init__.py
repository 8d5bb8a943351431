"""Benchmarks that print figures: ``python -m bench`` (see bench/RESULTS.md). Not tests."""
