"""Shared test configuration. Integration tests get their stack from mailstack's own pytest plugin."""
