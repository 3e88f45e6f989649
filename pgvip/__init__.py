"""pgvip: virtual IPs for Patroni clusters, elected among peers with VRRPv3."""

__version__ = "0.1.0"
