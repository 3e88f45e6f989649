"""The lab: a real Patroni cluster in network namespaces, for tests and demos."""
