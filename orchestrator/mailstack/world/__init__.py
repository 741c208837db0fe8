"""The stack's outside world: its DNS records and network addresses, DKIM keys, the outside MX's stored mail."""
