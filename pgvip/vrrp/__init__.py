"""Elect: VRRPv3 (RFC 5798 / RFC 9568) as sans-IO code: codec and state machine."""
