"""Benchmark scripts: each prints a table and writes a JSON file of its figures."""
