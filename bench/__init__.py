"""Benchmarks: each compares two things measured in one run and writes its figures to bench/results/."""
