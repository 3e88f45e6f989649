"""The RO engine: the director that programs the RO balancer while this node's RO VRRP
instance is MASTER (`director`, its phases in `phases`), the replica probes (`probes`), the
status it reports (`status`) and the `/patroni` watch that feeds the RO instance (`role_watch`)."""
