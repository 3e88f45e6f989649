"""Observe: the Patroni REST API client and the meaning of its answers."""
