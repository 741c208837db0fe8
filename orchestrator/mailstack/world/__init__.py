"""The outside world a stack can talk to: DNS records, DKIM keys, the outside MX."""
