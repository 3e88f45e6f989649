"""The L3 (BGP) mode's daemon wiring: `engine.py` composes it, `route_runner.py` applies
one VIP's announce/withdraw decisions, `ro_route_watch.py` decides the RO VIP's."""
