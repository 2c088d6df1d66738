"""Benchmarks: scale runs and comparisons with other tools (not part of the test suite)."""
