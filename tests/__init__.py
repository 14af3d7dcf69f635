"""The test suite, importable as a package: shared references in ``tests.reference``."""
