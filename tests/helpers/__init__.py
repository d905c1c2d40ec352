"""Helpers shared by the tests and, for the real models, the benchmarks."""
