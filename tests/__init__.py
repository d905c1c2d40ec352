"""The test suite: a package, so that tests and benchmarks import the shared helpers as
``tests.helpers`` with the repository root on the path (pytest puts it there)."""
