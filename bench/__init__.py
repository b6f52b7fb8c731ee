"""Benchmarks: commands that print JSON with figures measured side by side in one run."""
