"""The L3 dataplane: a BGP speaker that pgvip runs as its own child and that announces, as
host routes, exactly the VIPs on the bgp interface (`bird_config.py` renders its config,
`bird.py` runs and watches it, `control.py` talks to its control socket)."""

from __future__ import annotations


class BgpSpeakerError(RuntimeError):
    """The speaker cannot run: missing binary, a config it rejects, no control socket."""
