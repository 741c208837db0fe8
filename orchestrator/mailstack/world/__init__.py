"""The stack's "outside world": its DNS records, its network addresses and the outside MX's stored mail."""
