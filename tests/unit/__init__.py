"""Unit tests (a package, so that tests/unit/test_cli.py and tests/integration/test_cli.py can coexist)."""
