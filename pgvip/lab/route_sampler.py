"""Samples the routers' forwarding tables every few milliseconds: for each VIP, the next hops
(the nodes) its /32 route points to. The L3 counterpart of the VIP sampler: it is what shows
two RW routes at once, or an RO route set that is not the healthy replicas."""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute

IPv4 = ipaddress.IPv4Address


@dataclass(frozen=True)
class RouteSample:
    t: float  # monotonic
    router: str
    hops: Mapping[str, tuple[str, ...]]  # VIP -> sorted next-hop addresses (empty: no route)


def next_hops(ipr: Any, vips: Sequence[IPv4]) -> dict[str, tuple[str, ...]]:
    """The next hops of each VIP's /32 route in `ipr`'s main table."""
    wanted = {str(v) for v in vips}
    out: dict[str, tuple[str, ...]] = {v: () for v in wanted}
    for r in ipr.route("dump", family=2):
        dst = r.get("dst")
        if dst not in wanted or r["dst_len"] != 32:
            continue
        hops = [r.get("gateway")] + [m.get("gateway") for m in (r.get("multipath") or [])]
        out[dst] = tuple(sorted(h for h in hops if h))
    return out


class RouteSampler:
    def __init__(self, routers: Mapping[str, str], vips: Sequence[IPv4], interval: float = 0.02):
        """`routers`: router name -> its namespace."""
        self._routers = dict(routers)
        self._vips = list(vips)
        self._interval = interval
        self.samples: list[RouteSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._iprs: dict[str, Any] = {}

    def __enter__(self) -> RouteSampler:
        self._iprs = {name: IPRoute(netns=ns, flags=0) for name, ns in self._routers.items()}
        self._thread = threading.Thread(target=self._run, name="route-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        for ipr in self._iprs.values():
            ipr.close()

    def _run(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            for name, ipr in self._iprs.items():
                try:
                    hops = next_hops(ipr, self._vips)
                except Exception:  # a router's namespace going away ends its samples
                    continue
                self.samples.append(RouteSample(time.monotonic(), name, hops))
            due = max(due + self._interval, time.monotonic() - self._interval)
            self._stop.wait(max(0.0, due - time.monotonic()))

    def latest(self, router: str) -> RouteSample | None:
        return next((s for s in reversed(self.samples) if s.router == router), None)

    def dual(self, vip: IPv4, since: float = 0.0) -> list[RouteSample]:
        """Samples in which `vip` had more than one next hop (two RW holders)."""
        return [s for s in self.samples if s.t >= since and len(s.hops.get(str(vip), ())) > 1]

    def wait_for(
        self, router: str, vip: IPv4, hops: set[str] | None, timeout: float
    ) -> float | None:
        """Seconds until `router`'s route to `vip` has exactly `hops` (None: any route, set():
        no route); None if it did not within `timeout`."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            s = self.latest(router)
            if s is not None and s.t > t0:
                now = set(s.hops.get(str(vip), ()))
                if bool(now) if hops is None else now == hops:
                    return s.t - t0
            time.sleep(self._interval / 2)
        return None
